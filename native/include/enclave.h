/* enclave.h: the only door between Python and the native code of EnclaveSQL.
 *
 * It is compiled as C and, between the EE_CDEF_BEGIN and EE_CDEF_END markers, read by
 * enclave/build_enclave.py as the cffi declaration. Keep that region plain C declarations:
 * no include guards, attributes or preprocessor logic (EE_MUST_CHECK is stripped by the build).
 *
 * Conventions, for every function in every section:
 *   - the return value is an ee_status and must be checked (-Werror turns a dropped one into a
 *     build error);
 *   - buffers are (pointer, length) pairs; outputs come first as (out, out_cap, *out_len);
 *   - there are no callbacks and no pointers to pointers; keys are integer ids, never addresses;
 *   - every failed authentication, whatever the cause, returns EE_ERR_AUTH;
 *   - each comment ends with a Leakage: line, the complete list of what a caller learns.
 *
 * Sections: 1. ABI and status codes, 2. CPU and codec selection, 3. column keys,
 * 4. cell codec (client side), 5. enclave (attestation evidence, sessions, query contexts and
 * the batch operators over encrypted columns).
 * Change EE_ABI_VERSION whenever anything inside the cdef region changes.
 */
#ifndef ENCLAVESQL_ENCLAVE_H
#define ENCLAVESQL_ENCLAVE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define EE_MUST_CHECK __attribute__((warn_unused_result))
#else
#define EE_MUST_CHECK
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* EE_CDEF_BEGIN */

/* ---- 1. ABI and status codes ------------------------------------------------------------- */

#define EE_ABI_VERSION 6

typedef enum ee_status {
    EE_OK = 0,
    EE_ERR_AUTH = 1,          /* a cell failed authentication: short, bad version, MAC, padding */
    EE_ERR_ARGUMENT = 2,      /* a malformed argument: NULL buffer, bad offsets, bad mode */
    EE_ERR_KEY_ID = 3,        /* the key id is unknown, or was freed (stale generation) */
    EE_ERR_KEY_LENGTH = 4,    /* a root key that is not exactly 32 bytes */
    EE_ERR_CAPACITY = 5,      /* an output buffer is too small */
    EE_ERR_KEY_TABLE_FULL = 6,/* every key slot is in use */
    EE_ERR_UNSUPPORTED = 7,   /* the requested implementation needs CPU features absent here */
    EE_ERR_RANDOM = 8,        /* the random generator failed */
    EE_ERR_INTERNAL = 9,      /* a library call failed: a bug or an exhausted resource */
    EE_ERR_SESSION = 10,      /* no such enclave session, or a package made for another session */
    EE_ERR_REPLAY = 11,       /* a package counter not above the last accepted one */
    EE_ERR_PACKAGE = 12,      /* a package that authenticated but is malformed or for another
                                 statement */
    EE_ERR_NOT_AUTHORIZED = 13, /* the query's package does not allow this operation */
    EE_ERR_QUERY = 14,        /* no such query context (never opened, or ended) */
    EE_ERR_LIMIT = 15,        /* too many sessions, query contexts, keys or list items */
    EE_ERR_OVERFLOW = 16,     /* an aggregate left the range of its result type */
    EE_ERR_PLATFORM = 17,     /* the simulated platform key cannot be read or created */
    EE_ERR_TYPE = 18          /* an unknown type code, or an operator this type does not have */
} ee_status;

/* Writes EE_ABI_VERSION as compiled into the library.
 * Leakage: none. */
EE_MUST_CHECK ee_status ee_abi_version(uint32_t *out_version);

/* ---- 2. CPU and codec selection ---------------------------------------------------------- */

#define EE_CPU_AES 1
#define EE_CPU_SHA 2
#define EE_CPU_SSE41 4
#define EE_CPU_SSSE3 8
#define EE_CPU_OS_XMM 16

#define EE_IMPL_AUTO 0
#define EE_IMPL_PORTABLE 1
#define EE_IMPL_FAST 2

/* Writes the EE_CPU_* bits this CPU and operating system support.
 * Leakage: none (CPU features are public). */
EE_MUST_CHECK ee_status ee_cpu_features(uint32_t *out_flags);

/* Selects the cell codec for the whole process: EE_IMPL_FAST (AES-NI and SHA-NI), EE_IMPL_PORTABLE
 * (OpenSSL libcrypto) or EE_IMPL_AUTO (fast where the CPU allows, unless the environment variable
 * ENCLAVESQL_CODEC=portable). EE_IMPL_FAST on a CPU without the features gives EE_ERR_UNSUPPORTED.
 * Both implementations produce identical bytes; only speed differs.
 * Leakage: none. */
EE_MUST_CHECK ee_status ee_cell_select_impl(int32_t impl);

/* Writes the codec in use now, EE_IMPL_FAST or EE_IMPL_PORTABLE (never EE_IMPL_AUTO).
 * Leakage: none. */
EE_MUST_CHECK ee_status ee_cell_current_impl(int32_t *out_impl);

/* ---- 3. Column keys ---------------------------------------------------------------------- */

#define EE_ROOT_KEY_LEN 32
#define EE_DERIVED_KEYS_LEN 96

/* Derives the cell keys of spec 1.1 from a 32-byte root key (CEK) and writes
 * enc_key || mac_key || iv_key (96 bytes) to out. A test and interop helper: the batch functions
 * below never need it, they use a loaded key id.
 * Leakage: none beyond the lengths given. */
EE_MUST_CHECK ee_status ee_key_derive(uint8_t *out, size_t out_cap, size_t *out_len,
                                      const uint8_t *root_key, size_t root_key_len);

/* Loads a 32-byte root key into a key slot: derives the cell keys and precomputes the AES-256
 * key schedules and the HMAC-SHA256 inner and outer states once. Writes the new key id.
 * Ids carry a generation, so the id of a freed slot is rejected even after the slot is reused.
 * Leakage: none beyond the length given and whether the table is full. */
EE_MUST_CHECK ee_status ee_key_load(uint64_t *out_key_id, const uint8_t *root_key,
                                    size_t root_key_len);

/* Wipes and frees a key slot. Freeing an unknown or already freed id returns EE_ERR_KEY_ID.
 * Leakage: whether the id named a live key. */
EE_MUST_CHECK ee_status ee_key_free(uint64_t key_id);

/* ---- 4. Cell codec (client side) --------------------------------------------------------- */

/* Encryption modes of ee_cell_encrypt_batch. */
#define EE_CELL_DETERMINISTIC 1
#define EE_CELL_RANDOMIZED 2
#define EE_CELL_GIVEN_IV 3

/* Bytes a cell adds around its AES ciphertext: version (1) + MAC (32) + IV (16). */
#define EE_CELL_OVERHEAD 49
#define EE_CELL_MIN_LEN 65

/* Encrypts `count` rows held in Arrow binary layout (int32 offsets[count + 1] into data, an
 * optional validity bitmap whose row 0 is bit validity_bit_offset; NULL validity means all rows
 * are valid) into cells of spec 1.2, in Arrow layout: out_offsets receives count + 1 int64
 * offsets into out_data, and *out_data_len the bytes used. A null row gives an empty entry.
 * Row i's cell takes 49 + 16 * (len_i / 16 + 1) bytes; out_data_cap must hold their sum.
 * mode EE_CELL_DETERMINISTIC derives each IV from the plaintext, EE_CELL_RANDOMIZED draws it from
 * the OpenSSL generator, EE_CELL_GIVEN_IV takes 16 bytes per valid row, in order, from ivs
 * (ivs_len must be exactly 16 times the number of valid rows; ivs is ignored otherwise).
 * Leakage: none beyond the lengths and null positions it was given. */
EE_MUST_CHECK ee_status ee_cell_encrypt_batch(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t key_id, int32_t mode,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const uint8_t *ivs, size_t ivs_len);

/* Verifies and decrypts `count` cells held in Arrow binary layout (as for ee_cell_encrypt_batch)
 * into plaintexts: out_offsets receives count + 1 int64 offsets into out_data, *out_data_len the
 * bytes used. Each cell's MAC is checked in constant time before any of its plaintext is written.
 * out_data_cap must be at least the sum over valid rows of (len_i - 49); the true plaintext
 * lengths are reported through out_offsets. Any bad cell (short, bad version byte, bad MAC, bad
 * padding, wrong key) returns EE_ERR_AUTH; then out_data is wiped and *out_failed_row names the
 * first bad row, for internal diagnostics only.
 * Leakage: none beyond the lengths and null positions it was given, and on failure the index of
 * the first cell that failed authentication. */
EE_MUST_CHECK ee_status ee_cell_decrypt_batch(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap, size_t *out_failed_row,
    uint64_t key_id,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count);

/* ---- 5. Enclave -------------------------------------------------------------------------- */

/* Everything below runs "inside" the enclave. Keys it receives live only in enclave-private
 * query contexts, never in the key table of section 3, so no codec call can reach them. The
 * enclave answers with booleans, ranks, group ids and ciphertexts, never with plaintext.
 * Handles (session and query ids) are random 64-bit values, never counters or addresses. */

#define EE_ENCLAVE_SVN 1
#define EE_MEASUREMENT_LEN 32
#define EE_NONCE_MIN_LEN 16
#define EE_NONCE_MAX_LEN 256
#define EE_ECDH_PUBLIC_LEN 97
#define EE_STATEMENT_HASH_LEN 32
#define EE_EVIDENCE_MAX_LEN 1157
#define EE_MAX_SESSIONS 256
#define EE_MAX_QUERIES_PER_SESSION 64
/* A session not used (opened, named by a package, or its query contexts' keys used) for longer
 * than this, on the monotonic clock, is expired: wiped with its query contexts when it is next
 * named (which then gives EE_ERR_SESSION or EE_ERR_QUERY) or when a new session needs its slot.
 * So crashed clients cannot fill the session table for good. */
#define EE_SESSION_IDLE_SECONDS 900
#define EE_MAX_QUERY_KEYS 256
#define EE_MAX_AUTHORIZATIONS 4096
#define EE_MAX_IN_ITEMS 65536

/* Operator codes (the enclave package's authorization entries use the same numbers). */
#define EE_OP_EQ 1
#define EE_OP_NE 2
#define EE_OP_LT 3
#define EE_OP_LE 4
#define EE_OP_GT 5
#define EE_OP_GE 6
#define EE_OP_BETWEEN 7
#define EE_OP_IN 8
#define EE_OP_LIKE 9
#define EE_OP_RANK 10
#define EE_OP_GROUP 11
#define EE_OP_SUM 12
#define EE_OP_AVG 13
#define EE_OP_MIN 14
#define EE_OP_MAX 15
#define EE_OP_COUNT_DISTINCT 16
#define EE_OP_REENCRYPT 17
#define EE_OP_ENCRYPT 18

/* Authorization-only codes: they name a permission in a package entry and are never the `op`
 * of a call (a call that passes one gets EE_ERR_ARGUMENT). They start at 64, apart from the
 * operator codes above. EE_OP_REENCRYPT_TARGET lets REENCRYPT write under a key (see
 * ee_enclave_transform) without letting ENCRYPT take the host's plaintexts under it. */
#define EE_OP_REENCRYPT_TARGET 64

/* Type codes: the normalized plaintext forms of rule v1, with the order the enclave applies
 * (the order DuckDB gives the plaintext column):
 *   INT64 8-byte signed LE; FLOAT32/FLOAT64 IEEE LE, -inf < ... < +inf < NaN, every NaN equal,
 *   -0.0 == 0.0; DECIMAL sign byte (1 non-negative, 0 negative) + LE magnitude of any length,
 *   one scale per column; DATE 3-byte LE days; TIME 5-byte LE ticks; DATETIME2 time(5) ||
 *   date(3), by date then time; DATETIMEOFFSET UTC time(5) || UTC date(3) || i16 offset, by
 *   UTC date then time, offset ignored; UTF8 byte order (= code point order); UTF16LE code
 *   point order (surrogate pairs decoded); BYTES byte order, a prefix first; GUID .NET byte
 *   order in the cell, ordered by the canonical big-endian bytes as DuckDB orders UUIDs. */
#define EE_TYPE_INT64 1
#define EE_TYPE_FLOAT32 2
#define EE_TYPE_FLOAT64 3
#define EE_TYPE_DECIMAL 4
#define EE_TYPE_DATE 5
#define EE_TYPE_TIME 6
#define EE_TYPE_DATETIME2 7
#define EE_TYPE_DATETIMEOFFSET 8
#define EE_TYPE_UTF8 9
#define EE_TYPE_UTF16LE 10
#define EE_TYPE_BYTES 11
#define EE_TYPE_GUID 12

/* Results of ee_enclave_compare, one byte per row. */
#define EE_FALSE 0
#define EE_TRUE 1
#define EE_NULL 2

/* Writes the enclave's measurement, security version and debug flag. The measurement is the
 * SHA-256 of the bytes of the loaded shared object (or executable) that contains the enclave
 * code, found with dladdr() on an enclave function and read from disk once per process; svn is
 * EE_ENCLAVE_SVN; debug is 1 only in builds compiled with -DEE_ENCLAVE_DEBUG=1.
 * Leakage: none (all three are public and go into every evidence). */
EE_MUST_CHECK ee_status ee_enclave_info(uint8_t out_measurement[32], uint32_t *out_svn,
                                        int32_t *out_debug);

/* Opens a session: makes (once per process) the ECDSA P-384 identity key and (per session) an
 * ephemeral ECDH P-384 key, derives session_key = SHA-256(ECDH(enclave, client).x) at once,
 * and writes evidence format v2 of docs/attestation.md, signed by the simulated platform key
 * `<platform_dir>/platform_key.pem` (created 0600 with platform_key.pub.pem when absent).
 * nonce is 16..256 bytes; client_ecdh_public is the 97-byte uncompressed P-384 point; the
 * evidence needs at most EE_EVIDENCE_MAX_LEN bytes. A point off the curve is EE_ERR_ARGUMENT,
 * an unusable platform key EE_ERR_PLATFORM, a table full of sessions used within the last
 * EE_SESSION_IDLE_SECONDS EE_ERR_LIMIT (the longest-idle expired session gives up its slot).
 * Leakage: the evidence (public by design), the random session id, and whether some session
 * had been idle past the bound (it is gone afterwards).
 */
EE_MUST_CHECK ee_status ee_enclave_open_session(
    uint8_t *out_evidence, size_t out_evidence_cap, size_t *out_evidence_len,
    uint64_t *out_session_id,
    const uint8_t *nonce, size_t nonce_len,
    const uint8_t *client_ecdh_public, size_t client_ecdh_public_len,
    const uint8_t *platform_dir, size_t platform_dir_len);

/* Closes a session: wipes its session key and every query context it opened. An expired
 * session is wiped too and gives EE_ERR_SESSION, like an unknown id.
 * Leakage: whether the id named a live, unexpired session. */
EE_MUST_CHECK ee_status ee_enclave_close_session(uint64_t session_id);

/* Opens a query context from an enclave package (spec 5.6, extended):
 *   package   = u64 LE session id || cell(root key = session key, randomized, keys_blob)
 *   keys_blob = 16 random bytes || i64 LE counter || SHA-256(UTF-16LE(statement)) (32)
 *               || u16 LE key_count || key_count x (u32 LE database_id || 8-byte
 *                  cek_md_version || u16 LE cek_id || 32-byte CEK)
 *               || u16 LE authorization_count || authorization_count x (u16 LE cek_id
 *                  || u8 operator || u8 type_code || 32-byte SHA-256(constant blob))
 *   and nothing after it. At most EE_MAX_QUERY_KEYS keys and EE_MAX_AUTHORIZATIONS entries.
 * Checks, in order: the session exists and the package names it (EE_ERR_SESSION); the cell
 * authenticates (EE_ERR_AUTH; nothing inside is parsed before); the blob's structure
 * (EE_ERR_PACKAGE); its counter is above the last accepted one (EE_ERR_REPLAY); its statement
 * hash equals statement_hash (EE_ERR_PACKAGE). Only then is the counter advanced and the context
 * made, holding the package's CEKs and authorizations. At most EE_MAX_QUERIES_PER_SESSION open
 * contexts per session (EE_ERR_LIMIT). A session idle past EE_SESSION_IDLE_SECONDS is wiped
 * here and gives EE_ERR_SESSION: the client opens a new session.
 * Leakage: which check failed (an expired session reads as an unknown one), and the random
 * query id.
 */
EE_MUST_CHECK ee_status ee_enclave_begin_query(uint64_t *out_query_id, uint64_t session_id,
                                               const uint8_t *package, size_t package_len,
                                               const uint8_t *statement_hash,
                                               size_t statement_hash_len);

/* Wipes and frees a query context. An unknown or ended id gives EE_ERR_QUERY.
 * Leakage: whether the id named a live query context. */
EE_MUST_CHECK ee_status ee_enclave_end_query(uint64_t query_id);

/* Operators. Every call names the query context, the CEK (cek_id of the package), the type code,
 * the operator and its constant blob, and first checks that the package authorized exactly
 * (cek_id, op, type_code, SHA-256(constant)); otherwise EE_ERR_NOT_AUTHORIZED, before any cell
 * is read. Cells come in Arrow binary layout (as in section 4). Every cell, the constant's
 * included, is verified before it is decrypted; any bad cell, or a decrypted value of the wrong
 * length for its type, gives EE_ERR_AUTH. Decrypted values live in enclave scratch memory that
 * is wiped before the call returns. */

/* EE_OP_EQ..EE_OP_GE, EE_OP_BETWEEN, EE_OP_IN, EE_OP_LIKE: writes one byte per row into out
 * (out_cap >= count): EE_TRUE, EE_FALSE, or EE_NULL where a cell is null. For EQ..GE an empty
 * constant compares the column with the `right` cells row by row (right_count == count);
 * otherwise the right_* buffers must be NULL/0. LIKE is only for EE_TYPE_UTF8/UTF16LE
 * (EE_ERR_TYPE otherwise) and matches % and _ over code points, with an optional escape.
 * Leakage: the result bytes, the lengths and null positions given.
 */
EE_MUST_CHECK ee_status ee_enclave_compare(
    uint8_t *out, size_t out_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int32_t *right_offsets, size_t right_offsets_len,
    const uint8_t *right_data, size_t right_data_len,
    const uint8_t *right_validity, size_t right_validity_len, size_t right_validity_bit_offset,
    size_t right_count);

/* EE_OP_RANK and EE_OP_GROUP (empty constant): writes one int64 per row into out
 * (out_cap >= count): the dense rank of the row's value in ascending order from 0 (equal values,
 * equal ids), or -1 for a null cell. GROUP gives the same numbers; it exists so a client can
 * allow grouping and joins without allowing ORDER BY.
 * Leakage: the ranks (hence the order and equality of the values), lengths and null positions.
 */
EE_MUST_CHECK ee_status ee_enclave_rank(
    int64_t *out, size_t out_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count);

/* EE_OP_SUM, AVG, MIN, MAX, COUNT_DISTINCT (empty constant): group_ids holds one int64 per row
 * (-1: skip the row; otherwise below group_count). Writes one randomized cell per group under the
 * same CEK in Arrow layout (out_offsets: group_count + 1 int64 offsets); a group without a
 * non-null value gets an empty entry (a null), except COUNT_DISTINCT, which encrypts 0. Result
 * forms: SUM of INT64 or DECIMAL is DECIMAL (sign byte + 16-byte magnitude, at decimal_scale for
 * DECIMAL, scale 0 for INT64), |sum| >= 10^38 is EE_ERR_OVERFLOW; SUM of FLOAT32/FLOAT64 and every
 * AVG is FLOAT64 (AVG of DECIMAL divides by 10^decimal_scale); MIN and MAX are the input form,
 * freshly encrypted; COUNT_DISTINCT is INT64. Other types give EE_ERR_TYPE for SUM and AVG.
 * out_data_cap must hold group_count cells of max(17, longest plaintext) bytes.
 * Leakage: which groups are empty (for all but COUNT_DISTINCT), whether an overflow happened,
 * the lengths of MIN/MAX results, and the lengths and null positions given.
 */
EE_MUST_CHECK ee_status ee_enclave_aggregate(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int64_t *group_ids, size_t group_ids_len, size_t group_count, int32_t decimal_scale);

/* EE_OP_REENCRYPT and EE_OP_ENCRYPT: one cell per row, in Arrow layout like
 * ee_cell_encrypt_batch (nulls stay empty entries). REENCRYPT's constant is u16 LE target cek_id
 * || u8 mode (1 deterministic, 2 randomized); the target key must also be authorized by its own
 * entry (target, EE_OP_REENCRYPT_TARGET, type_code, SHA-256(u16 LE source cek_id || u8 mode)),
 * which names the source key and mode and allows no call by itself. An ENCRYPT grant on the
 * target does not stand in for it: that would let the host encrypt plaintexts of its choice
 * under the target key, and, for a deterministic target, test any guess for equality.
 * ENCRYPT takes normalized plaintexts (a plaintext column being encrypted in place) and a
 * constant that is empty (randomized) or one mode byte; a plaintext of the wrong length for its
 * type is EE_ERR_ARGUMENT.
 * out_data_cap must hold every output cell (REENCRYPT: at most the input cell's length).
 * Leakage: the lengths and null positions given; for deterministic output, equality of the
 * values given (REENCRYPT: only of cells already under the source key, never of a value the
 * host chose).
 */
EE_MUST_CHECK ee_status ee_enclave_transform(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count);

/* ---- 5b. Aggregates of arithmetic expressions (H1) ---------------------------------------- */

/* Operator codes of ee_enclave_aggregate_expression: SUM and AVG of a row-wise expression. */
#define EE_OP_SUM_EXPR 19
#define EE_OP_AVG_EXPR 20
#define EE_EXPR_PROGRAM_VERSION 1
#define EE_EXPR_MAX_SLOTS 16
#define EE_EXPR_MAX_CODE 256

/* EE_OP_SUM_EXPR and EE_OP_AVG_EXPR: SUM or AVG over the rows of a group of one arithmetic
 * expression of several columns. The constant is the expression program (docs/enclave.md):
 *   u8 version (1) || u8 slot_count (1..16) || slot_count x (u8 source (1 encrypted, 2 plain)
 *   || u16 LE cek_id (0 for plain) || u8 type_code (INT64, DECIMAL, FLOAT64) || u8 scale)
 *   || u16 LE code_len (1..256) || code: postfix instructions, 0x01 slot (u8 index),
 *   0x02 exact literal (u8 scale || u8 sign (1 non-negative, 0 negative) || 16-byte LE
 *   magnitude), 0x03 FLOAT64 literal (8 bytes LE), 0x04 add, 0x05 subtract, 0x06 multiply,
 *   0x07 negate; it must leave exactly one value.
 * Every cek_id the program names, and the result key cek_id (which must be the first encrypted
 * slot's), must be authorized for (cek_id, op, type_code, SHA-256(program)), else
 * EE_ERR_NOT_AUTHORIZED before any cell is read; a malformed program is EE_ERR_PACKAGE.
 * Exact values (INT64, DECIMAL) stay exact in 128 bits with their scale (+ and - align scales,
 * * adds them, above 38 is EE_ERR_PACKAGE); an intermediate or sum with |value| >= 10^38 is
 * EE_ERR_OVERFLOW. A FLOAT64 operand makes the operation FLOAT64. type_code names the result:
 * EE_TYPE_DECIMAL for an exact expression, EE_TYPE_FLOAT64 otherwise (EE_ERR_TYPE if not).
 * The rows come slot-major in one Arrow binary array of count = slot_count * rows entries:
 * entry s * rows + r is slot s of row r; an encrypted slot holds cells (verified, then
 * decrypted), a plain slot the normalized plaintext of its type (wrong shape: EE_ERR_ARGUMENT).
 * A row with any NULL operand has a NULL expression and is skipped. group_ids has one int64
 * per row (-1: skip the row). Writes one randomized cell per group under cek_id, in Arrow
 * layout (out_offsets: group_count + 1); a group without a non-null expression gets an empty
 * entry. Results: SUM exact is DECIMAL (sign byte + 16-byte magnitude) at the expression's
 * scale; SUM FLOAT64 and every AVG are FLOAT64. out_data_cap must hold group_count cells of
 * 17 bytes (81 bytes each). A result key other than the first encrypted slot's, or a program
 * without an encrypted slot, is EE_ERR_ARGUMENT or EE_ERR_PACKAGE respectively.
 * Leakage: which groups are empty, whether an overflow happened, whether the program is well
 * formed, and the lengths and null positions given (the plain slots and literals are the
 * host's to know already).
 */
EE_MUST_CHECK ee_status ee_enclave_aggregate_expression(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int64_t *group_ids, size_t group_ids_len, size_t group_count);

/* ---- 5d. Every SUM and AVG of one query stage in one call (H1) -------------------------- */

#define EE_STAGE_LAYOUT_VERSION 1
#define EE_STAGE_MAX_OUTPUTS 32

/* Several SUM, AVG, SUM_EXPR and AVG_EXPR aggregates over the same rows and groups, each result
 * exactly what its own ee_enclave_aggregate or ee_enclave_aggregate_expression call would give,
 * but every input column (a stage slot) verified and decrypted once for all of them. layout:
 *   u8 version (1) || u8 slot_count (1..16) || u8 output_count (1..32)
 *   || output_count x (u8 op || u8 type_code || u16 LE cek_id || u8 decimal_scale
 *      || u16 LE constant_len || constant || slot map)
 * op is EE_OP_SUM or EE_OP_AVG (empty constant, decimal_scale as ee_enclave_aggregate's, a
 * one-byte slot map: the stage slot of its cells under cek_id) or EE_OP_SUM_EXPR or
 * EE_OP_AVG_EXPR (constant: the expression program of 5b; the slot map gives the stage slot of
 * each program slot, one byte each). Each output is authorized exactly as its own call: a plain
 * output for (cek_id, op, type_code, SHA-256 of nothing), a program for its result key and every
 * key it reads with (cek_id, op, type_code, SHA-256(program)); else EE_ERR_NOT_AUTHORIZED
 * before any cell is read. Every reader of a stage slot must agree on its source, key and type
 * (programs also on the scale), and every slot needs a reader: EE_ERR_ARGUMENT otherwise.
 * The rows come slot-major in one Arrow binary array (count = slot_count * rows), as in 5b;
 * group_ids has one int64 per row (-1: skip). Writes output_count * group_count randomized
 * cells in Arrow layout, output-major (entry o * group_count + g is output o of group g, under
 * output o's key; out_offsets_cap >= output_count * group_count + 1); an empty group gets an
 * empty entry. out_data_cap must hold all of them (17-byte plaintexts, 81-byte cells). Large
 * inputs are split over up to 4 threads, whose sums are added in a fixed order.
 * Leakage: for each output, what its own call leaks (which groups are empty, whether an
 * overflow happened, whether its program is well formed), and the lengths and null positions
 * given.
 */
EE_MUST_CHECK ee_status ee_enclave_aggregate_stage(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id,
    const uint8_t *layout, size_t layout_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int64_t *group_ids, size_t group_ids_len, size_t group_count);

/* ---- 5e. A stage's SUM and AVG as sealed partial states (H2) ------------------------------ */

#define EE_STAGE_STATE_VERSION 1

/* The stage of 5d folded incrementally, for an aggregate the host's engine groups and runs in
 * parallel (the native DuckDB aggregate): partial sums leave the enclave only sealed, as a
 * randomized cell (the cell format) under a key derived from the first output's key, the
 * query id and SHA-256(layout), whose plaintext is u8 version (1) || u8 output_count || two
 * zero bytes || output_count x (i128 LE sum || f64 LE float sum || i64 LE count): a sealed
 * state is 65 + 32 * output_count bytes. Every call authorizes its layout exactly as 5d does.
 * ee_enclave_stage_accumulate: the rows (slot-major, as 5d; count may be 0) with group_ids
 * (rows int64s, -1 skips a row), plus state_count earlier sealed states (Arrow binary, a null
 * entry is an empty state) each added into group state_groups[i] (-1 skips it), give
 * group_count fresh sealed states (out_offsets_cap >= group_count + 1). A state that does not
 * open under this query's and layout's key, or has the wrong shape, is EE_ERR_AUTH; a sum that
 * leaves 128 bits is EE_ERR_OVERFLOW (the DECIMAL(38) range is checked by
 * ee_enclave_stage_finish, as 5d checks only its results).
 * Leakage: whether an overflow of 128 bits happened, whether a program is well formed, whether
 * each state given opens under this query's and layout's key, and the lengths and null
 * positions given; a sealed state's length depends on the layout only (never on a sum, a count
 * or whether a group is empty). Which groups are empty shows only at ee_enclave_stage_finish.
 */
EE_MUST_CHECK ee_status ee_enclave_stage_accumulate(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id,
    const uint8_t *layout, size_t layout_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int64_t *group_ids, size_t group_ids_len,
    const int32_t *state_offsets, size_t state_offsets_len,
    const uint8_t *state_data, size_t state_data_len,
    const uint8_t *state_validity, size_t state_validity_len,
    size_t state_count,
    const int64_t *state_groups, size_t state_groups_len,
    size_t group_count);

/* ee_enclave_stage_finish: the results of state_count sealed states (a null entry: an empty
 * group), exactly as ee_enclave_aggregate_stage writes them for those groups: output-major,
 * entry o * state_count + g, randomized cells under output o's key, an empty entry for an
 * empty group (out_offsets_cap >= output_count * state_count + 1; out_data_cap must hold
 * 81-byte cells). Errors as for ee_enclave_stage_accumulate.
 * Leakage: for each output, what 5d leaks for these groups (which groups are empty, whether an
 * overflow happened, whether its program is well formed), and whether each state opens.
 */
EE_MUST_CHECK ee_status ee_enclave_stage_finish(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
    int64_t *out_offsets, size_t out_offsets_cap,
    uint64_t query_id,
    const uint8_t *layout, size_t layout_len,
    const int32_t *state_offsets, size_t state_offsets_len,
    const uint8_t *state_data, size_t state_data_len,
    const uint8_t *state_validity, size_t state_validity_len,
    size_t state_count);

/* ---- 5c. Top-k for ORDER BY ... LIMIT (H7) ------------------------------------------------ */

/* Operator code of ee_enclave_top_k (kept apart from the codes other sections add). */
#define EE_OP_TOP_K 24

/* EE_OP_TOP_K: the rows of the first k places of the order of the column's values, and their
 * order. The constant is u64 LE k || u8 direction (0 ascending, 1 descending) || u8 nulls
 * (0 NULLS LAST, 1 NULLS FIRST), exactly 10 bytes (else EE_ERR_ARGUMENT, after the
 * authorization check). A row is selected when it is among the first k rows of that order or
 * ties with the k-th row's value (NULLs tie with each other), so a secondary sort key and OFFSET
 * applied afterwards stay exact; LIMIT k OFFSET m needs k + m. Writes one int64 per row into
 * out (out_cap >= count): for a selected non-null row its dense rank among the selected values
 * in ascending value order from 0 (whatever the direction), -2 for a selected null cell, and -1
 * for a row not selected. k = 0 selects nothing; k >= count selects every row. Every cell is
 * verified and decrypted once, in chunks with copies of at most k values when k <= 4096 (the
 * whole column at once above), and a bounded heap selects the rows (O(n log k) comparisons).
 * Leakage: which rows are among the first k places (with the ties of the k-th), the order and
 * equality of the values of those rows only, and the lengths and null positions given; strictly
 * less than EE_OP_RANK, which orders every row.
 */
EE_MUST_CHECK ee_status ee_enclave_top_k(
    int64_t *out, size_t out_cap,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count);

/* ---- 5c. Conjunctions of predicates (H3) ------------------------------------------------- */

/* ee_enclave_compare folded into a running AND, so that `p1 AND p2 AND ...` over one row costs
 * one pass per predicate over the rows still in play. state holds one byte per row
 * (state_len >= count), each EE_TRUE, EE_FALSE or EE_NULL (anything else is EE_ERR_ARGUMENT),
 * and is read and written: a row already EE_FALSE is skipped (its cell is neither copied nor
 * verified nor decrypted); for the other rows the predicate's result is folded in by SQL's
 * three-valued AND (FALSE wins, then NULL, else the row keeps its state). Start from all
 * EE_TRUE. Every other argument, check and authorization is exactly ee_enclave_compare's: each
 * predicate of a conjunction is authorized on its own. On failure state is zeroed.
 * Leakage: the new state (the AND of the state given and the predicate, on the rows that were
 * not yet FALSE), the lengths and null positions given. Skipped rows leak nothing more.
 */
EE_MUST_CHECK ee_status ee_enclave_compare_and(
    uint8_t *state, size_t state_len,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const int32_t *right_offsets, size_t right_offsets_len,
    const uint8_t *right_data, size_t right_data_len,
    const uint8_t *right_validity, size_t right_validity_len, size_t right_validity_bit_offset,
    size_t right_count);

/* A string view: EE_VIEW_SIZE bytes per cell; a cell of up to EE_VIEW_INLINE bytes is inline. */
#define EE_VIEW_SIZE 16
#define EE_VIEW_INLINE 12

/* ee_enclave_compare_and over cells given as 16-byte string views (DuckDB's string_t layout),
 * so that a host holding such vectors passes them without first copying every cell into Arrow
 * buffers. views holds count entries of EE_VIEW_SIZE bytes (views_len == count * EE_VIEW_SIZE,
 * else EE_ERR_ARGUMENT): u32 length (native byte order), then, for a length up to
 * EE_VIEW_INLINE, the cell's bytes inline; above it, 4 bytes the enclave ignores (DuckDB's
 * prefix) and a pointer (native size and order) to the cell's bytes, which must stay readable
 * for the call. A row is live unless it is null or already EE_FALSE; other rows are not read.
 * A live pointer entry with a NULL pointer, or live cells too long for 32-bit offsets (above
 * INT32_MAX bytes within a chunk of 1024 rows), is EE_ERR_ARGUMENT. Each live row's view is read
 * once into enclave memory and its cell's bytes copied once; verification and decryption use
 * only that copy. validity is a bitmap as in ee_enclave_compare_and (DuckDB's validity words
 * are one, on a little-endian host). A column pair (EQ..GE, empty constant) passes the right column the same
 * way; otherwise right_views must be NULL and right_count 0. Everything else (state, checks,
 * authorization, statuses, results) is exactly ee_enclave_compare_and's.
 * Leakage: exactly ee_enclave_compare_and's. */
EE_MUST_CHECK ee_status ee_enclave_compare_and_views(
    uint8_t *state, size_t state_len,
    uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len,
    const uint8_t *views, size_t views_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count,
    const uint8_t *right_views, size_t right_views_len,
    const uint8_t *right_validity, size_t right_validity_len, size_t right_validity_bit_offset,
    size_t right_count);

/* Packs `count` EE_TRUE/EE_FALSE/EE_NULL bytes into Arrow's boolean layout: out_values gets
 * bit i set for EE_TRUE, out_validity bit i set unless EE_NULL (LSB first; each cap >=
 * (count + 7) / 8 bytes), *out_null_count the EE_NULL rows. A byte above EE_NULL is
 * EE_ERR_ARGUMENT. It touches no cell and no key.
 * Leakage: none (the bytes are the caller's own). */
EE_MUST_CHECK ee_status ee_tristate_pack(uint8_t *out_values, size_t out_values_cap,
                                         uint8_t *out_validity, size_t out_validity_cap,
                                         size_t *out_null_count, const uint8_t *state,
                                         size_t count);

/* EE_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* ENCLAVESQL_ENCLAVE_H */

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
 * 4. cell codec (client side). The enclave section (sessions, operators) is added after 4.
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

#define EE_ABI_VERSION 1

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
    EE_ERR_INTERNAL = 9       /* a library call failed: a bug or an exhausted resource */
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

/* EE_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* ENCLAVESQL_ENCLAVE_H */

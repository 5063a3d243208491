/* enclave_internal.h: what the enclave's source files share with each other, never with Python.
 *
 * Secret memory accounting, the query-context lookup that hands an operator its key, the typed
 * order of normalized values, the LIKE matcher, index sorting, and the private copy-in of Arrow
 * batches with their decrypted values. Nothing here is ABI; nothing here may reach the codec's
 * key table (section 3 of enclave.h).
 */
#ifndef ENCLAVESQL_ENCLAVE_INTERNAL_H
#define ENCLAVESQL_ENCLAVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cell_internal.h"

/* ---- Secret memory (enclave_rows.c) ---------------------------------------------------------- */

/* Zeroed heap memory for secrets (plaintext values, keys); NULL when out of memory. Every such
 * buffer goes back through ee_secret_free, which wipes it, so tests can count stragglers. */
void *ee_secret_alloc(size_t len);
void ee_secret_free(void *ptr, size_t len);

#ifdef EE_TESTING
/* Test-only: secret buffers allocated and not yet freed. */
long ee_test_secret_outstanding(void);
/* Test-only: nonzero bytes left in the calling thread's compare scratch values (plaintext that
 * outlived a call, were it not scrubbed). */
size_t ee_test_thread_scratch_residue(void);
#endif

/* ---- Evidence (enclave_evidence.c) ----------------------------------------------------------- */

/* Makes a fresh ECDH P-384 key, derives session_key = SHA-256(ECDH(it, client).x) into
 * out_session_key, and writes evidence format v2 signed by the platform key of platform_dir
 * (a NUL-terminated copy) and the identity key. The ECDH private key is freed before return. */
ee_status ee_evidence_make(uint8_t *out, size_t out_cap, size_t *out_len,
                           uint8_t out_session_key[32], const uint8_t *nonce, size_t nonce_len,
                           const uint8_t client_ecdh_public[97], const char *platform_dir);

/* ---- Query contexts (enclave_session.c) ------------------------------------------------------ */

#ifdef EE_TESTING
/* Test-only: moves the sessions' monotonic clock forward, so a test can expire a session
 * without sleeping. The Python extension is built without EE_TESTING and has no such hook. */
void ee_test_advance_session_clock(int64_t seconds);
#endif

/* Checks that query_id is live (EE_ERR_QUERY) and that its package authorized exactly
 * (cek_id, op, type_code, SHA-256(constant)) (EE_ERR_NOT_AUTHORIZED), then copies that CEK's
 * prepared keys into *out. The caller wipes *out. */
ee_status ee_query_key(ee_cell_keys *out, uint64_t query_id, uint16_t cek_id, int32_t op,
                       int32_t type_code, const uint8_t *constant, size_t constant_len);

/* ---- Values (value_order.c) ------------------------------------------------------------------ */

/* 1 when type_code is one of EE_TYPE_*. */
int ee_type_known(int32_t type_code);
/* The length of every value of a fixed-length type; 0 for DECIMAL, strings and bytes. */
size_t ee_type_fixed_len(int32_t type_code);
/* 1 when a decrypted value has a legal shape for its type (length, DECIMAL sign byte). */
int ee_value_well_formed(int32_t type_code, const uint8_t *value, size_t len);
/* The contract's order of two well-formed values of one type: -1, 0 or 1. */
int ee_value_compare(int32_t type_code, const uint8_t *a, size_t a_len, const uint8_t *b,
                     size_t b_len);

/* The types whose order ee_value_order_key maps onto integers. */
static inline int ee_type_keyed(int32_t type_code) {
    return type_code == EE_TYPE_INT64 || type_code == EE_TYPE_DECIMAL ||
           type_code == EE_TYPE_DATE || type_code == EE_TYPE_TIME ||
           type_code == EE_TYPE_DATETIME2 || type_code == EE_TYPE_DATETIMEOFFSET;
}

static inline uint64_t ee_le_bytes(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--) v = (v << 8) | p[i - 1];
    return v;
}

/* An integer whose order among the values of one keyed type is exactly ee_value_compare's, for
 * a well-formed value: 1 and *key, or 0 when the value has none (a DECIMAL magnitude of 2^127
 * or more), and the caller falls back to ee_value_compare. Inline, so that a row loop over one
 * type costs a few loads and compares per row. */
#if defined(__GNUC__) || defined(__clang__)
#define EE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EE_ALWAYS_INLINE inline
#endif

static EE_ALWAYS_INLINE int ee_value_order_key(int32_t type_code, const uint8_t *v, size_t len,
                                               __int128 *key) {
    switch (type_code) {
    case EE_TYPE_INT64:
        *key = (int64_t)ee_le_bytes(v, 8);
        return 1;
    case EE_TYPE_DATE:
        *key = (__int128)ee_le_bytes(v, 3);
        return 1;
    case EE_TYPE_TIME:
        *key = (__int128)ee_le_bytes(v, 5);
        return 1;
    case EE_TYPE_DATETIME2:
    case EE_TYPE_DATETIMEOFFSET: /* date(3) before time(5); the offset is ignored */
        *key = ((__int128)ee_le_bytes(v + 5, 3) << 40) | (__int128)ee_le_bytes(v, 5);
        return 1;
    case EE_TYPE_DECIMAL: {
        /* sign byte (1 non-negative, 0 negative) || little-endian magnitude; -0 is 0 */
        const uint8_t *m = v + 1;
        size_t n = len - 1;
        for (; n > 16; n--) {
            if (m[n - 1] != 0) return 0;
        }
        unsigned __int128 magnitude = 0;
        int loaded = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n == 16) { /* the usual DECIMAL(38) form: two word loads */
            uint64_t lo, hi;
            memcpy(&lo, m, 8);
            memcpy(&hi, m + 8, 8);
            magnitude = ((unsigned __int128)hi << 64) | lo;
            loaded = 1;
        }
#endif
        if (!loaded) {
            for (size_t i = n; i > 0; i--) magnitude = (magnitude << 8) | m[i - 1];
        }
        if (magnitude >> 127) return 0;
        *key = v[0] == 1 ? (__int128)magnitude : -(__int128)magnitude;
        return 1;
    }
    default:
        return 0;
    }
}

/* Decodes a UTF-8 (EE_TYPE_UTF8) or UTF-16LE value into code points; out holds len entries.
 * Malformed units become distinct values above U+10FFFF, so they match only themselves. */
size_t ee_code_points(int32_t type_code, const uint8_t *value, size_t len, uint32_t *out);

#define EE_LIKE_ANY_ONE 0xffffffffu
#define EE_LIKE_ANY_RUN 0xfffffffeu
/* Turns a decoded pattern into tokens in place: literal code points, EE_LIKE_ANY_ONE for an
 * unescaped '_', EE_LIKE_ANY_RUN for '%'. Returns 0 for a pattern ending in the escape. */
int ee_like_compile(uint32_t *pattern, size_t *pattern_len, uint32_t escape);
/* 1 when the text matches the compiled pattern (iterative, backtracks only to the last '%'). */
int ee_like_match(const uint32_t *pattern, size_t pattern_len, const uint32_t *text,
                  size_t text_len);

/* Stable merge sort of n indexes by cmp (ctx passed through); tmp holds n entries. */
typedef int (*ee_index_cmp)(const void *ctx, uint32_t a, uint32_t b);
void ee_sort_indexes(uint32_t *indexes, uint32_t *tmp, size_t n, ee_index_cmp cmp,
                     const void *ctx);

/* ---- Batches (enclave_rows.c) ---------------------------------------------------------------- */

/* An Arrow binary input as the host passed it. Nothing in it is trusted until copied in. */
typedef struct ee_input {
    const int32_t *offsets;
    size_t offsets_len;
    const uint8_t *data;
    size_t data_len;
    const uint8_t *validity;
    size_t validity_len;
    size_t bit_offset;
    size_t count;
} ee_input;

/* Checks the shape of an input (buffer presence, offsets_len, bitmap length). Offsets are
 * checked again as they are copied in. */
ee_status ee_input_check(const ee_input *in);

/* A private copy of rows [start, start + count) of an input, decrypted and checked:
 * row i is null (or was not loaded) when valid[i] is 0, else its value is
 * values[value_offsets[i] .. value_offsets[i + 1]). Only the loaded rows' cells are copied, packed
 * (cells, cell_offsets), and decrypted as one unbroken run. Buffers grow as needed and are reused
 * across loads; each load first wipes the plaintext the previous one left (ee_plain_scrub).
 * An ordinary plain keeps its values in counted secret memory (ee_secret_alloc); a resident one
 * (ee_plain_init_resident: per-thread scratch kept across calls) in uncounted memory, which its
 * owner must scrub before every return so that no plaintext outlives the call. */
typedef struct ee_plain {
    uint8_t *cells;
    size_t cells_cap;
    int32_t *cell_offsets; /* packed: entry j for the j-th loaded row */
    size_t cell_offsets_cap;
    uint8_t *valid;
    size_t valid_cap;
    uint8_t *values; /* secret */
    size_t values_cap;
    int64_t *value_offsets;
    size_t value_offsets_cap;
    int64_t *live_offsets; /* the codec's packed value offsets, before they are spread */
    size_t live_offsets_cap;
    size_t count;
    size_t longest; /* the longest value, in bytes */
    size_t dirty;   /* values[0 .. dirty) may hold what the last load decrypted */
    int resident;
} ee_plain;

void ee_plain_init(ee_plain *plain);
void ee_plain_init_resident(ee_plain *plain);
/* Copies the rows in, verifies and decrypts every valid cell (keys != NULL), or takes them as
 * plaintexts (keys == NULL, for EE_OP_ENCRYPT), then checks each value's shape for type_code.
 * A bad cell or a decrypted value of the wrong shape is EE_ERR_AUTH; a plaintext of the wrong
 * shape is EE_ERR_ARGUMENT. On failure the values are wiped. */
ee_status ee_plain_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                        const ee_input *in, size_t start, size_t count);
/* Checks the shape of a string-view input: views_len == in->count * EE_VIEW_SIZE, no NULL
 * buffer, a bitmap long enough (in gives validity, bit_offset and count; no offsets or data). */
ee_status ee_views_check(const uint8_t *views, size_t views_len, const ee_input *in);
/* As ee_plain_load, from `count` 16-byte string views (enclave.h, EE_VIEW_SIZE) of which only
 * the rows with their bit set in live_bits (LSB first) are loaded. Each view is read once into
 * private memory and its cell's bytes copied once; a pointer view with a NULL pointer, or cells
 * adding up to more than INT32_MAX bytes, is EE_ERR_ARGUMENT. */
ee_status ee_plain_load_views(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                              const uint8_t *views, const uint8_t *live_bits, size_t count);
/* Wipes the bytes the last load may have decrypted into (its cells' ciphertext length, not the
 * whole buffer), and forgets its rows. */
void ee_plain_scrub(ee_plain *plain);
/* Wipes the values and frees everything (a resident plain stays resident, empty). */
void ee_plain_free(ee_plain *plain);

static inline const uint8_t *ee_plain_value(const ee_plain *plain, size_t row, size_t *len) {
    *len = (size_t)(plain->value_offsets[row + 1] - plain->value_offsets[row]);
    return plain->values + plain->value_offsets[row];
}

/* Decrypts one cell (a constant) into a fresh secret buffer, checking its shape for type_code.
 * *out_value is NULL on failure; free it with ee_secret_free(*out_value, *out_cap). */
ee_status ee_decrypt_constant(uint8_t **out_value, size_t *out_len, size_t *out_cap,
                              const ee_cell_keys *keys, int32_t type_code, const uint8_t *cell,
                              size_t cell_len);

/* Encrypts `count` plaintexts (Arrow layout with int32 offsets, validity bytes) into cells
 * under keys, randomized (random IVs) or deterministic, at out_data; out_offsets gets count + 1
 * int64 offsets. EE_ERR_CAPACITY when out_data_cap is too small. */
ee_status ee_encrypt_values(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                            int64_t *out_offsets, const ee_cell_keys *keys, int deterministic,
                            const uint8_t *values, const int64_t *value_offsets,
                            const uint8_t *valid, size_t count);

/* Copies `rows` group ids into a fresh buffer (*out_ids, NULL on failure; free() it) and checks
 * that each is -1 (skip the row) or below group_count: EE_ERR_ARGUMENT otherwise. The copy keeps
 * the host from changing an id between the check and its use. */
ee_status ee_group_ids_copy(int64_t **out_ids, const int64_t *group_ids, size_t rows,
                            size_t group_count);

#endif /* ENCLAVESQL_ENCLAVE_INTERNAL_H */

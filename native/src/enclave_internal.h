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

#include "cell_internal.h"

/* ---- Secret memory (enclave_rows.c) ---------------------------------------------------------- */

/* Zeroed heap memory for secrets (plaintext values, keys); NULL when out of memory. Every such
 * buffer goes back through ee_secret_free, which wipes it, so tests can count stragglers. */
void *ee_secret_alloc(size_t len);
void ee_secret_free(void *ptr, size_t len);

#ifdef EE_TESTING
/* Test-only: secret buffers allocated and not yet freed. */
long ee_test_secret_outstanding(void);
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
/* 1 when a decrypted value has a legal shape for its type (length, DECIMAL sign byte). */
int ee_value_well_formed(int32_t type_code, const uint8_t *value, size_t len);
/* The contract's order of two well-formed values of one type: -1, 0 or 1. */
int ee_value_compare(int32_t type_code, const uint8_t *a, size_t a_len, const uint8_t *b,
                     size_t b_len);

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
 * row i is null when valid[i] is 0, else its value is values[value_offsets[i] ..
 * value_offsets[i + 1]). Buffers grow as needed and are reused across loads. */
typedef struct ee_plain {
    uint8_t *cells;
    size_t cells_cap;
    int32_t *cell_offsets;
    size_t cell_offsets_cap;
    uint8_t *bitmap;
    size_t bitmap_cap;
    uint8_t *valid;
    size_t valid_cap;
    uint8_t *values; /* secret */
    size_t values_cap;
    int64_t *value_offsets;
    size_t value_offsets_cap;
    size_t count;
    size_t longest; /* the longest value, in bytes */
} ee_plain;

void ee_plain_init(ee_plain *plain);
/* Copies the rows in, verifies and decrypts every valid cell (keys != NULL), or takes them as
 * plaintexts (keys == NULL, for EE_OP_ENCRYPT), then checks each value's shape for type_code.
 * A bad cell or a decrypted value of the wrong shape is EE_ERR_AUTH; a plaintext of the wrong
 * shape is EE_ERR_ARGUMENT. On failure the values are wiped. */
ee_status ee_plain_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                        const ee_input *in, size_t start, size_t count);
/* Wipes the values and frees everything. */
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

/* cell_internal.h: what the cell codec's source files share with each other, never with Python.
 *
 * It defines the in-memory form of a loaded key, the row view over Arrow buffers, and the
 * interface each implementation (portable, fast) offers the batch layer. Nothing here is ABI.
 */
#ifndef ENCLAVESQL_CELL_INTERNAL_H
#define ENCLAVESQL_CELL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>

#include "enclave.h"

#define EE_CELL_VERSION_BYTE 0x01
#define EE_CELL_MAC_OFFSET 1
#define EE_CELL_IV_OFFSET 33
#define EE_CELL_CT_OFFSET 49

/* A loaded key: derived keys plus everything precomputed for both implementations.
 * SHA256_CTX and AES_KEY are plain structs, so a copy of this struct is a complete, independent
 * key; the batch layer works on such a copy so a concurrent ee_key_free cannot pull it away. */
typedef struct ee_cell_keys {
    uint8_t enc_key[32];
    uint8_t mac_key[32];
    uint8_t iv_key[32];
    /* SHA-256 states after one block of (key ^ ipad) and (key ^ opad): the HMAC midstates. */
    SHA256_CTX mac_inner;
    SHA256_CTX mac_outer;
    SHA256_CTX iv_inner;
    SHA256_CTX iv_outer;
    /* AES-NI round keys (15 each) for the fast path; valid only when fast_ready is 1. */
    _Alignas(16) uint8_t fast_encrypt_rounds[15 * 16];
    _Alignas(16) uint8_t fast_decrypt_rounds[15 * 16];
    int fast_ready;
} ee_cell_keys;

/* A read-only view of Arrow binary rows: offsets are absolute positions in data. */
typedef struct ee_rows {
    const int32_t *offsets;
    const uint8_t *data;
    const uint8_t *validity; /* NULL: every row is valid */
    size_t validity_bit_offset;
    size_t count;
} ee_rows;

static inline int ee_row_valid(const ee_rows *rows, size_t row) {
    if (rows->validity == NULL) {
        return 1;
    }
    size_t bit = rows->validity_bit_offset + row;
    return (rows->validity[bit >> 3] >> (bit & 7)) & 1;
}

static inline const uint8_t *ee_row_bytes(const ee_rows *rows, size_t row, size_t *len) {
    *len = (size_t)(rows->offsets[row + 1] - rows->offsets[row]);
    return rows->data + rows->offsets[row];
}

static inline size_t ee_cell_len_for(size_t plaintext_len) {
    return EE_CELL_OVERHEAD + 16 * (plaintext_len / 16 + 1);
}

/* Checks the PKCS#7 padding of a final 16-byte block without branching on its bytes.
 * Returns 1 and sets *pad_len (1..16) when valid, 0 otherwise. */
static inline int ee_pkcs7_check(const uint8_t last_block[16], size_t *pad_len) {
    uint32_t pad = last_block[15];
    /* bad becomes nonzero when pad is 0 or above 16 ... */
    uint32_t bad = ((pad - 1u) >> 8) | ((16u - pad) >> 8);
    for (uint32_t i = 0; i < 16; i++) {
        /* ... or when a byte inside the padding differs from pad. in_pad is all-ones for the
         * last `pad` bytes, computed by arithmetic rather than a comparison branch. */
        uint32_t in_pad = 0u - (((15u - i) - pad) >> 31);
        bad |= in_pad & (uint32_t)(last_block[i] ^ pad);
    }
    *pad_len = pad;
    return bad == 0;
}

/* Wipes memory in a way the compiler may not elide (OPENSSL_cleanse). */
void ee_wipe(void *ptr, size_t len);

/* Derives and precomputes a root key's cell keys into *out, outside any table (the enclave keeps
 * its keys in its own query contexts). *out is zeroed first; the caller wipes it. */
ee_status ee_keys_prepare(ee_cell_keys *out, const uint8_t root_key[32]);

/* Key table (cell_keys.c). Copies a live key into *out under the table lock. */
ee_status ee_key_snapshot(uint64_t key_id, ee_cell_keys *out);

/* CPU detection (cpu.c). */
uint32_t ee_cpu_flags(void);
int ee_cpu_fast_supported(void);

/* Codec selection (cell_batch.c): EE_IMPL_FAST or EE_IMPL_PORTABLE. */
int32_t ee_impl_active(void);

/* Portable implementation (cell_portable.c). */
void ee_portable_prepare(ee_cell_keys *keys);
/* Fast implementation (cell_fast.c); call only when ee_cpu_fast_supported() is 1. */
void ee_fast_prepare(ee_cell_keys *keys);

/* Each implementation encrypts or decrypts a batch. Encrypt: ivs holds 16 bytes per valid row
 * or is NULL for deterministic IVs. The caller has validated offsets and capacities. */
ee_status ee_portable_encrypt_rows(const ee_cell_keys *keys, const ee_rows *rows,
                                   const uint8_t *ivs, uint8_t *out_data, int64_t *out_offsets);
ee_status ee_portable_decrypt_rows(const ee_cell_keys *keys, const ee_rows *rows,
                                   uint8_t *out_data, size_t out_data_cap, int64_t *out_offsets,
                                   size_t *failed_row);
ee_status ee_fast_encrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, const uint8_t *ivs,
                               uint8_t *out_data, int64_t *out_offsets);
ee_status ee_fast_decrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, uint8_t *out_data,
                               size_t out_data_cap, int64_t *out_offsets, size_t *failed_row);

/* The active implementation's row functions (cell_batch.c); same contracts as above. */
ee_status ee_encrypt_rows_any(const ee_cell_keys *keys, const ee_rows *rows, const uint8_t *ivs,
                              uint8_t *out_data, int64_t *out_offsets);
ee_status ee_decrypt_rows_any(const ee_cell_keys *keys, const ee_rows *rows, uint8_t *out_data,
                              size_t out_data_cap, int64_t *out_offsets, size_t *failed_row);

#ifdef EE_TESTING
/* Test-only: the raw bytes of key slot `slot` (live or freed), to check that freeing wipes it. */
const uint8_t *ee_test_key_slot_bytes(size_t slot, size_t *len);
size_t ee_test_key_slot_of(uint64_t key_id);
#endif

#endif /* ENCLAVESQL_CELL_INTERNAL_H */

/* cell_portable.c: the portable cell codec, built only on OpenSSL libcrypto.
 *
 * It is the reference the fast path must match byte for byte, and the codec on CPUs without
 * AES-NI and SHA-NI. It must never write a cell's plaintext before that cell's MAC is verified.
 */

/* The low-level SHA256_* functions are deprecated in OpenSSL 3 but remain available. They let the
 * HMAC midstates live in plain structs copied per cell; EVP digests need a heap context per use,
 * which costs more per 8-byte cell than the hashing itself. The warning is silenced for this file
 * only. AES goes through EVP (an ECB context keyed once per batch), which picks AES-NI when the
 * CPU has it and its best software AES (vector-permute where SSSE3 allows) otherwise. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cell_internal.h"

/* HMAC midstates: compress one block of key ^ ipad and one of key ^ opad (RFC 2104). */
static void hmac_prepare(const uint8_t key[32], SHA256_CTX *inner, SHA256_CTX *outer) {
    uint8_t block[64];
    memset(block, 0x36, sizeof block);
    for (int i = 0; i < 32; i++) block[i] ^= key[i];
    SHA256_Init(inner);
    SHA256_Update(inner, block, 64);
    memset(block, 0x5c, sizeof block);
    for (int i = 0; i < 32; i++) block[i] ^= key[i];
    SHA256_Init(outer);
    SHA256_Update(outer, block, 64);
    ee_wipe(block, sizeof block);
}

void ee_portable_prepare(ee_cell_keys *keys) {
    hmac_prepare(keys->mac_key, &keys->mac_inner, &keys->mac_outer);
    hmac_prepare(keys->iv_key, &keys->iv_inner, &keys->iv_outer);
}

/* Finishes an HMAC whose inner hash has absorbed the message. */
static void hmac_finish(SHA256_CTX *inner, const SHA256_CTX *outer_start, uint8_t out[32]) {
    uint8_t inner_digest[32];
    SHA256_CTX outer = *outer_start;
    SHA256_Final(inner_digest, inner);
    SHA256_Update(&outer, inner_digest, 32);
    SHA256_Final(out, &outer);
    ee_wipe(inner_digest, sizeof inner_digest);
    ee_wipe(&outer, sizeof outer);
}

/* MAC = HMAC-SHA256(mac_key, version || IV || ct || 0x01), spec 1.3. The cell's version byte and
 * its IV and ct are not contiguous (the MAC sits between them), so they are fed in pieces. */
static void cell_mac(const ee_cell_keys *keys, const uint8_t *cell, size_t ct_len,
                     uint8_t mac[32]) {
    static const uint8_t version_length = 0x01;
    SHA256_CTX inner = keys->mac_inner;
    SHA256_Update(&inner, cell, 1);
    SHA256_Update(&inner, cell + EE_CELL_IV_OFFSET, 16 + ct_len);
    SHA256_Update(&inner, &version_length, 1);
    hmac_finish(&inner, &keys->mac_outer, mac);
    ee_wipe(&inner, sizeof inner);
}

/* CBC encryption block by block through an ECB context: C[i] = E(P[i] ^ C[i-1]), with the
 * PKCS#7 padding folded into the final block. Returns 0 if OpenSSL fails. */
static int encrypt_one(const ee_cell_keys *keys, EVP_CIPHER_CTX *ecb, const uint8_t *pt,
                       size_t pt_len, const uint8_t iv[16], uint8_t *cell) {
    int ok = 1;
    uint8_t block[16];
    const uint8_t *chain = iv;
    size_t full_blocks = pt_len / 16;
    size_t tail = pt_len - 16 * full_blocks;
    cell[0] = EE_CELL_VERSION_BYTE;
    memcpy(cell + EE_CELL_IV_OFFSET, iv, 16);
    for (size_t b = 0; b <= full_blocks && ok; b++) {
        if (b < full_blocks) {
            memcpy(block, pt + 16 * b, 16);
        } else {
            if (tail > 0) memcpy(block, pt + 16 * b, tail);
            memset(block + tail, (int)(16 - tail), 16 - tail);
        }
        for (int i = 0; i < 16; i++) block[i] ^= chain[i];
        uint8_t *out = cell + EE_CELL_CT_OFFSET + 16 * b;
        int written = 0;
        ok = EVP_EncryptUpdate(ecb, out, &written, block, 16) == 1 && written == 16;
        chain = out;
    }
    if (ok) {
        cell_mac(keys, cell, 16 * (full_blocks + 1), cell + EE_CELL_MAC_OFFSET);
    }
    ee_wipe(block, sizeof block);
    return ok;
}

/* A fresh ECB context keyed with enc_key, padding off; NULL if OpenSSL fails. Freeing it with
 * EVP_CIPHER_CTX_free wipes the key schedule. */
static EVP_CIPHER_CTX *ecb_context(const ee_cell_keys *keys, int encrypt) {
    EVP_CIPHER_CTX *ecb = EVP_CIPHER_CTX_new();
    if (ecb != NULL &&
        (EVP_CipherInit_ex(ecb, EVP_aes_256_ecb(), NULL, keys->enc_key, NULL, encrypt) != 1 ||
         EVP_CIPHER_CTX_set_padding(ecb, 0) != 1)) {
        EVP_CIPHER_CTX_free(ecb);
        ecb = NULL;
    }
    return ecb;
}

static void deterministic_iv(const ee_cell_keys *keys, const uint8_t *pt, size_t pt_len,
                             uint8_t iv[16]) {
    uint8_t digest[32];
    SHA256_CTX inner = keys->iv_inner;
    SHA256_Update(&inner, pt, pt_len);
    hmac_finish(&inner, &keys->iv_outer, digest);
    memcpy(iv, digest, 16);
    ee_wipe(digest, sizeof digest);
    ee_wipe(&inner, sizeof inner);
}

ee_status ee_portable_encrypt_rows(const ee_cell_keys *keys, const ee_rows *rows,
                                   const uint8_t *ivs, uint8_t *out_data, int64_t *out_offsets) {
    ee_status status = EE_OK;
    uint8_t iv[16];
    size_t pos = 0;
    EVP_CIPHER_CTX *ecb = ecb_context(keys, 1);
    if (ecb == NULL) {
        return EE_ERR_INTERNAL;
    }
    out_offsets[0] = 0;
    for (size_t row = 0; row < rows->count; row++) {
        if (ee_row_valid(rows, row)) {
            size_t pt_len;
            const uint8_t *pt = ee_row_bytes(rows, row, &pt_len);
            if (ivs != NULL) {
                memcpy(iv, ivs, 16);
                ivs += 16;
            } else {
                deterministic_iv(keys, pt, pt_len, iv);
            }
            if (!encrypt_one(keys, ecb, pt, pt_len, iv, out_data + pos)) {
                status = EE_ERR_INTERNAL;
                break;
            }
            pos += ee_cell_len_for(pt_len);
        }
        out_offsets[row + 1] = (int64_t)pos;
    }
    EVP_CIPHER_CTX_free(ecb);
    ee_wipe(iv, sizeof iv);
    return status;
}

/* Verify, then decrypt, then check padding (spec 1.3). out has room for cell_len - 49 bytes.
 * On any failure the bytes written to out are wiped. */
static ee_status decrypt_one(const ee_cell_keys *keys, EVP_CIPHER_CTX *ecb, const uint8_t *cell,
                             size_t cell_len, uint8_t *out, size_t *pt_len) {
    ee_status status = EE_ERR_AUTH;
    uint8_t mac[32];
    size_t ct_len = 0;
    size_t pad = 0;
    if (cell_len < EE_CELL_MIN_LEN || (cell_len - EE_CELL_OVERHEAD) % 16 != 0) {
        goto done;
    }
    if (cell[0] != EE_CELL_VERSION_BYTE) {
        goto done;
    }
    ct_len = cell_len - EE_CELL_OVERHEAD;
    cell_mac(keys, cell, ct_len, mac);
    if (CRYPTO_memcmp(mac, cell + EE_CELL_MAC_OFFSET, 32) != 0) {
        goto done;
    }
    /* CBC decryption as ECB plus XOR: P[i] = D(C[i]) ^ C[i-1]. One EVP call per cell on a
     * context keyed once per batch lets OpenSSL use its fastest AES (AES-NI where present). */
    int written = 0;
    if (EVP_DecryptUpdate(ecb, out, &written, cell + EE_CELL_CT_OFFSET, (int)ct_len) != 1 ||
        (size_t)written != ct_len) {
        ee_wipe(out, ct_len);
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t i = 0; i < ct_len; i++) {
        out[i] ^= cell[EE_CELL_IV_OFFSET + i];
    }
    if (!ee_pkcs7_check(out + ct_len - 16, &pad)) {
        ee_wipe(out, ct_len);
        goto done;
    }
    *pt_len = ct_len - pad;
    status = EE_OK;
done:
    ee_wipe(mac, sizeof mac);
    return status;
}

ee_status ee_portable_decrypt_rows(const ee_cell_keys *keys, const ee_rows *rows,
                                   uint8_t *out_data, size_t out_data_cap, int64_t *out_offsets,
                                   size_t *failed_row) {
    ee_status status = EE_OK;
    size_t pos = 0;
    EVP_CIPHER_CTX *ecb = ecb_context(keys, 0);
    if (ecb == NULL) {
        return EE_ERR_INTERNAL;
    }
    out_offsets[0] = 0;
    for (size_t row = 0; row < rows->count; row++) {
        if (ee_row_valid(rows, row)) {
            size_t cell_len;
            size_t pt_len = 0;
            const uint8_t *cell = ee_row_bytes(rows, row, &cell_len);
            /* The batch layer checked the total, so this holds; it guards the invariant. */
            if (cell_len >= EE_CELL_OVERHEAD && out_data_cap - pos < cell_len - EE_CELL_OVERHEAD) {
                status = EE_ERR_CAPACITY;
                goto done;
            }
            status = decrypt_one(keys, ecb, cell, cell_len, out_data + pos, &pt_len);
            if (status != EE_OK) {
                *failed_row = row;
                goto done;
            }
            pos += pt_len;
        }
        out_offsets[row + 1] = (int64_t)pos;
    }
done:
    /* Frees (and OpenSSL wipes) the batch's copy of the key schedule. */
    EVP_CIPHER_CTX_free(ecb);
    return status;
}

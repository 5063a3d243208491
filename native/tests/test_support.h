/* test_support.h: helpers shared by the C tests and the fuzz driver of the cell codec.
 *
 * It holds a deterministic random generator, a CHECK macro that counts failures, and an
 * independent oracle that builds cells with OpenSSL EVP calls, not with the code under test.
 */
#ifndef ENCLAVESQL_TEST_SUPPORT_H
#define ENCLAVESQL_TEST_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "enclave.h"

static int test_failures = 0;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            test_failures++;                                                                   \
        }                                                                                      \
    } while (0)

/* xorshift64*: reproducible test data from a seed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static inline void rng_fill(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rng_next();
}

/* Oracle: HMAC-SHA256 over the concatenation of up to three pieces, with EVP. */
static inline void oracle_hmac(const uint8_t key[32], const uint8_t *a, size_t a_len, const uint8_t *b,
                        size_t b_len, const uint8_t *c, size_t c_len, uint8_t out[32]) {
    uint8_t *msg = malloc(a_len + b_len + c_len + 1);
    if (a_len) memcpy(msg, a, a_len);
    if (b_len) memcpy(msg + a_len, b, b_len);
    if (c_len) memcpy(msg + a_len + b_len, c, c_len);
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, 32, msg, a_len + b_len + c_len, out, &len);
    free(msg);
}

/* Oracle key derivation: the spec 1.1 labels, typed out again here in UTF-16LE by hand. */
static inline void oracle_derive(const uint8_t root[32], uint8_t enc[32], uint8_t mac[32],
                          uint8_t iv[32]) {
    const char *names[3] = {"encryption", "MAC", "IV"};
    uint8_t *outs[3] = {enc, mac, iv};
    for (int k = 0; k < 3; k++) {
        char ascii[200];
        uint8_t wide[400];
        int n = snprintf(ascii, sizeof ascii,
                         "Microsoft SQL Server cell %s key with encryption algorithm:%s and key "
                         "length:%d",
                         names[k], "AEAD_AES_256_CBC_HMAC_SHA256", 256);
        for (int i = 0; i < n; i++) {
            wide[2 * i] = (uint8_t)ascii[i];
            wide[2 * i + 1] = 0;
        }
        oracle_hmac(root, wide, 2 * (size_t)n, NULL, 0, NULL, 0, outs[k]);
    }
}

/* Oracle cell: EVP AES-256-CBC with PKCS#7, then the MAC of spec 1.3. Returns the cell length.
 * With raw = 1 the plaintext must be a multiple of 16 and is encrypted without padding, which
 * lets a test build a cell whose MAC is right but whose padding is wrong. */
static inline size_t oracle_cell(const uint8_t root[32], const uint8_t *pt, size_t pt_len,
                          const uint8_t iv[16], int raw, uint8_t *cell) {
    uint8_t enc[32], mac_key[32], iv_key[32];
    oracle_derive(root, enc, mac_key, iv_key);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, enc, iv);
    EVP_CIPHER_CTX_set_padding(ctx, raw ? 0 : 1);
    EVP_EncryptUpdate(ctx, cell + 49, &n1, pt, (int)pt_len);
    EVP_EncryptFinal_ex(ctx, cell + 49 + n1, &n2);
    EVP_CIPHER_CTX_free(ctx);
    size_t ct_len = (size_t)(n1 + n2);
    static const uint8_t one = 1;
    uint8_t head[17];
    head[0] = 1;
    memcpy(head + 1, iv, 16);
    cell[0] = 1;
    memcpy(cell + 33, iv, 16);
    oracle_hmac(mac_key, head, 17, cell + 49, ct_len, &one, 1, cell + 1);
    return 49 + ct_len;
}

static inline void oracle_deterministic_iv(const uint8_t root[32], const uint8_t *pt, size_t pt_len,
                                    uint8_t iv[16]) {
    uint8_t enc[32], mac_key[32], iv_key[32], digest[32];
    oracle_derive(root, enc, mac_key, iv_key);
    oracle_hmac(iv_key, pt, pt_len, NULL, 0, NULL, 0, digest);
    memcpy(iv, digest, 16);
}

#endif

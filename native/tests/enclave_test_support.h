/* enclave_test_support.h: a C stand-in for the client of the enclave, for tests and the fuzzer.
 *
 * It opens a session with its own OpenSSL ECDH key, parses the evidence, derives the session key
 * on the client side, and seals packages with the independent EVP cell oracle of test_support.h;
 * it also begins queries, builds Arrow binary arrays of oracle cells, and removes a test's
 * platform folder. It shares no code with the enclave sources beyond the public header.
 */
#ifndef ENCLAVESQL_ENCLAVE_TEST_SUPPORT_H
#define ENCLAVESQL_ENCLAVE_TEST_SUPPORT_H

#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "test_support.h"

typedef struct test_client {
    uint64_t session_id;
    uint8_t session_key[32];
    uint8_t evidence[EE_EVIDENCE_MAX_LEN];
    size_t evidence_len;
    uint8_t nonce[32];
    int64_t counter;
} test_client;

typedef struct test_grant {
    uint16_t cek_id;
    uint8_t op;
    uint8_t type_code;
    const uint8_t *constant;
    size_t constant_len;
} test_grant;

static inline EVP_PKEY *test_p384_key(void) {
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY_keygen_init(ctx);
    EVP_PKEY_CTX_set_group_name(ctx, "P-384");
    EVP_PKEY_keygen(ctx, &key);
    EVP_PKEY_CTX_free(ctx);
    return key;
}

static inline EVP_PKEY *test_peer(const uint8_t point[97]) {
    char group[] = "P-384";
    uint8_t copy[97];
    memcpy(copy, point, 97);
    OSSL_PARAM params[3] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, copy, 97),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *peer = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY_fromdata_init(ctx);
    EVP_PKEY_fromdata(ctx, &peer, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    return peer;
}

/* The enclave's ECDH point inside evidence v2: right after the nonce. */
static inline const uint8_t *test_evidence_point(const uint8_t *evidence) {
    size_t nonce_len = (size_t)evidence[76] | ((size_t)evidence[77] << 8);
    return evidence + 78 + nonce_len;
}

/* Opens a session and derives the session key the way a client would. Returns the status. */
static inline ee_status test_open(test_client *c, const char *platform_dir) {
    memset(c, 0, sizeof *c);
    RAND_bytes(c->nonce, sizeof c->nonce);
    EVP_PKEY *mine = test_p384_key();
    uint8_t point[97];
    size_t point_len = 0;
    EVP_PKEY_get_octet_string_param(mine, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                    sizeof point, &point_len);
    ee_status s = ee_enclave_open_session(c->evidence, sizeof c->evidence, &c->evidence_len,
                                          &c->session_id, c->nonce, sizeof c->nonce, point, 97,
                                          (const uint8_t *)platform_dir, strlen(platform_dir));
    if (s == EE_OK) {
        EVP_PKEY *peer = test_peer(test_evidence_point(c->evidence));
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(mine, NULL);
        uint8_t z[48];
        size_t z_len = sizeof z;
        EVP_PKEY_derive_init(ctx);
        EVP_PKEY_derive_set_peer(ctx, peer);
        EVP_PKEY_derive(ctx, z, &z_len);
        EVP_Digest(z, z_len, c->session_key, NULL, EVP_sha256(), NULL);
        EVP_PKEY_CTX_free(ctx);
        EVP_PKEY_free(peer);
    }
    EVP_PKEY_free(mine);
    return s;
}

static inline void test_statement_hash(const char *statement, uint8_t out[32]) {
    uint8_t wide[512];
    size_t n = strlen(statement);
    for (size_t i = 0; i < n; i++) {
        wide[2 * i] = (uint8_t)statement[i];
        wide[2 * i + 1] = 0;
    }
    EVP_Digest(wide, 2 * n, out, NULL, EVP_sha256(), NULL);
}

/* Writes the keys blob of docs/enclave.md; returns its length. */
static inline size_t test_blob(uint8_t *blob, int64_t counter, const char *statement,
                               const uint16_t *cek_ids, const uint8_t (*ceks)[32],
                               size_t key_count, const test_grant *grants, size_t grant_count) {
    size_t at = 0;
    RAND_bytes(blob, 16);
    for (int i = 0; i < 8; i++) blob[16 + i] = (uint8_t)((uint64_t)counter >> (8 * i));
    test_statement_hash(statement, blob + 24);
    at = 56;
    blob[at++] = (uint8_t)key_count;
    blob[at++] = (uint8_t)(key_count >> 8);
    for (size_t k = 0; k < key_count; k++) {
        memset(blob + at, 0, 12);
        blob[at + 12] = (uint8_t)cek_ids[k];
        blob[at + 13] = (uint8_t)(cek_ids[k] >> 8);
        memcpy(blob + at + 14, ceks[k], 32);
        at += 46;
    }
    blob[at++] = (uint8_t)grant_count;
    blob[at++] = (uint8_t)(grant_count >> 8);
    for (size_t g = 0; g < grant_count; g++) {
        blob[at] = (uint8_t)grants[g].cek_id;
        blob[at + 1] = (uint8_t)(grants[g].cek_id >> 8);
        blob[at + 2] = grants[g].op;
        blob[at + 3] = grants[g].type_code;
        static const uint8_t nothing[1] = {0};
        EVP_Digest(grants[g].constant ? grants[g].constant : nothing, grants[g].constant_len,
                   blob + at + 4, NULL, EVP_sha256(), NULL);
        at += 36;
    }
    return at;
}

/* package = u64 LE session id || oracle cell(session key, random IV, blob). */
static inline size_t test_seal(const test_client *c, uint64_t session_id, const uint8_t *blob,
                               size_t blob_len, uint8_t *package) {
    uint8_t iv[16];
    RAND_bytes(iv, sizeof iv);
    for (int i = 0; i < 8; i++) package[i] = (uint8_t)(session_id >> (8 * i));
    return 8 + oracle_cell(c->session_key, blob, blob_len, iv, 0, package + 8);
}

/* Begins a query of `statement` with a fresh package: the CEKs get ids 1..key_count in order,
 * and the grants are as given. *query gets the query id (0 when refused); returns the status. */
static inline ee_status test_begin_query(test_client *c, const char *statement,
                                         const uint8_t (*ceks)[32], size_t key_count,
                                         const test_grant *grants, size_t grant_count,
                                         uint64_t *query) {
    static uint8_t blob[65536], package[66000];
    uint16_t ids[16];
    if (key_count > 16) return EE_ERR_ARGUMENT;
    for (size_t k = 0; k < key_count; k++) ids[k] = (uint16_t)(k + 1);
    size_t blob_len =
        test_blob(blob, ++c->counter, statement, ids, ceks, key_count, grants, grant_count);
    size_t package_len = test_seal(c, c->session_id, blob, blob_len, package);
    uint8_t hash[32];
    test_statement_hash(statement, hash);
    *query = 0;
    return ee_enclave_begin_query(query, c->session_id, package, package_len, hash, 32);
}

/* A randomized oracle cell of one plaintext; returns its length. */
static inline size_t test_cell(const uint8_t cek[32], const void *pt, size_t pt_len,
                               uint8_t *cell) {
    uint8_t iv[16];
    RAND_bytes(iv, sizeof iv);
    return oracle_cell(cek, pt, pt_len, iv, 0, cell);
}

/* Appends row `row` to an Arrow binary array built in offsets, data and validity (the validity
 * bitmap zeroed beforehand): a cell of pt under cek, or pt's bytes as they are when cek is NULL,
 * or a null row when pt is NULL. Returns the data length after the row. */
static inline size_t test_append_row(int32_t *offsets, uint8_t *data, size_t len,
                                     uint8_t *validity, size_t row, const uint8_t *cek,
                                     const void *pt, size_t pt_len) {
    if (pt != NULL) {
        validity[row / 8] |= (uint8_t)(1u << (row % 8));
        if (cek != NULL) {
            len += test_cell(cek, pt, pt_len, data + len);
        } else {
            memcpy(data + len, pt, pt_len);
            len += pt_len;
        }
    }
    offsets[row + 1] = (int32_t)len;
    return len;
}

/* Removes the platform key pair an enclave test or fuzz run left in dir (a mkdtemp folder of its
 * own), then the folder, so that runs leave nothing behind in /tmp. */
static inline void test_remove_platform_dir(const char *dir) {
    char path[128];
    snprintf(path, sizeof path, "%s/platform_key.pem", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/platform_key.pub.pem", dir);
    unlink(path);
    rmdir(dir);
}

#endif

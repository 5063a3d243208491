/* test_enclave.c: C tests of the enclave (section 5 of enclave.h), run under ASan and UBSan.
 *
 * Packages and cells are built by an independent client (enclave_test_support.h); evidence is
 * checked with OpenSSL directly. Expected operator answers are written out by hand from the
 * contract's orders, never computed by the code under test.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../src/enclave_internal.h"
#include "enclave_test_support.h"

static char platform_dir[64];
static const char *STATEMENT = "SELECT * FROM t WHERE x = ?";
static uint8_t CEK1[32], CEK2[32];

/* ---- Arrow-layout batches of oracle cells ---------------------------------------------------- */

#define MAX_ROWS 4096
typedef struct cells {
    int32_t offsets[MAX_ROWS + 1];
    uint8_t *data;
    uint8_t validity[MAX_ROWS / 8 + 1];
    size_t count;
    size_t len;
    int has_nulls;
} cells;

static void cells_init(cells *c) {
    memset(c, 0, sizeof *c);
    c->data = malloc(MAX_ROWS * 160);
}

static void cells_free(cells *c) { free(c->data); }

/* Appends a cell of pt (NULL pt: a null row). */
static void cells_add(cells *c, const uint8_t cek[32], const void *pt, size_t pt_len) {
    if (pt == NULL) c->has_nulls = 1;
    c->len = test_append_row(c->offsets, c->data, c->len, c->validity, c->count++, cek, pt, pt_len);
}

static void cells_int(cells *c, const uint8_t cek[32], const int64_t *v) {
    uint8_t pt[8];
    for (int i = 0; v != NULL && i < 8; i++) pt[i] = (uint8_t)((uint64_t)*v >> (8 * i));
    cells_add(c, cek, v ? pt : NULL, 8);
}

#define ROWS(c)                                                                                 \
    (c)->offsets, (c)->count + 1, (c)->data, (c)->len, (c)->has_nulls ? (c)->validity : NULL,  \
        sizeof (c)->validity, (size_t)0, (c)->count
#define NO_ROWS NULL, 0, NULL, 0, NULL, 0, 0, 0

static size_t int_cell(const uint8_t cek[32], int64_t v, uint8_t *out) {
    uint8_t pt[8];
    for (int i = 0; i < 8; i++) pt[i] = (uint8_t)((uint64_t)v >> (8 * i));
    return test_cell(cek, pt, 8, out);
}

static uint64_t begin(test_client *c, const test_grant *grants, size_t grant_count) {
    uint8_t ceks[2][32];
    memcpy(ceks[0], CEK1, 32);
    memcpy(ceks[1], CEK2, 32);
    uint64_t query = 0;
    CHECK(test_begin_query(c, STATEMENT, ceks, 2, grants, grant_count, &query) == EE_OK);
    return query;
}

/* ---- identity and evidence ------------------------------------------------------------------- */

static void test_info_and_evidence(void) {
    uint8_t measurement[32], expected[32];
    uint32_t svn = 0;
    int32_t debug = -1;
    CHECK(ee_enclave_info(measurement, &svn, &debug) == EE_OK);
    CHECK(svn == EE_ENCLAVE_SVN && debug == 0);
    /* The test executable holds the enclave code here, so it is what is measured. */
    FILE *exe = fopen("/proc/self/exe", "rb");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint8_t buffer[65536];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, exe)) > 0) EVP_DigestUpdate(md, buffer, n);
    EVP_DigestFinal_ex(md, expected, NULL);
    EVP_MD_CTX_free(md);
    fclose(exe);
    CHECK(memcmp(measurement, expected, 32) == 0);

    test_client c;
    CHECK(test_open(&c, platform_dir) == EE_OK);
    const uint8_t *e = c.evidence;
    CHECK(memcmp(e, "EEV2", 4) == 0);
    CHECK(e[4] == 0 && e[5] == 0 && e[6] == 0 && e[7] == 0);
    CHECK(memcmp(e + 8, measurement, 32) == 0);
    CHECK(e[40] == EE_ENCLAVE_SVN && e[41] == 0);
    CHECK(e[76] == 32 && e[77] == 0);
    CHECK(memcmp(e + 78, c.nonce, 32) == 0);
    CHECK(e[110] == 0x04);
    size_t report_len = 175 + 32;
    size_t at = report_len;
    size_t sig_len = e[at] | (e[at + 1] << 8);
    const uint8_t *sig = e + at + 2;
    at += 2 + sig_len;
    size_t id_len = e[at] | (e[at + 1] << 8);
    const uint8_t *id_der = e + at + 2;
    at += 2 + id_len;
    size_t ecdh_sig_len = e[at] | (e[at + 1] << 8);
    const uint8_t *ecdh_sig = e + at + 2;
    at += 2 + ecdh_sig_len;
    CHECK(at == c.evidence_len);
    CHECK(sig_len >= 1 && sig_len <= 104 && ecdh_sig_len >= 1 && ecdh_sig_len <= 104);

    /* report_data binds the identity key. */
    uint8_t id_hash[32];
    EVP_Digest(id_der, id_len, id_hash, NULL, EVP_sha256(), NULL);
    CHECK(memcmp(e + 44, id_hash, 32) == 0);

    /* The platform signature verifies under platform_key.pub.pem. */
    char path[128];
    snprintf(path, sizeof path, "%s/platform_key.pub.pem", platform_dir);
    FILE *pub = fopen(path, "r");
    CHECK(pub != NULL);
    EVP_PKEY *platform = pub ? PEM_read_PUBKEY(pub, NULL, NULL, NULL) : NULL;
    if (pub) fclose(pub);
    md = EVP_MD_CTX_new();
    CHECK(platform != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, platform) == 1 &&
          EVP_DigestVerify(md, sig, sig_len, e, report_len) == 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(platform);

    /* The identity key signs label || ecdh_public || nonce (docs/attestation.md, format v2), and
     * the same signature does not verify over the unlabelled v1 message. */
    static const char label[] = "EnclaveSQL evidence v2"; /* NUL included */
    const uint8_t *cursor = id_der;
    EVP_PKEY *identity = d2i_PUBKEY(NULL, &cursor, (long)id_len);
    uint8_t signed_point[sizeof label + 97 + 32];
    memcpy(signed_point, label, sizeof label);
    memcpy(signed_point + sizeof label, e + 110, 97);
    memcpy(signed_point + sizeof label + 97, c.nonce, 32);
    md = EVP_MD_CTX_new();
    CHECK(identity != NULL &&
          EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, identity) == 1 &&
          EVP_DigestVerify(md, ecdh_sig, ecdh_sig_len, signed_point, sizeof signed_point) == 1);
    EVP_MD_CTX_free(md);
    md = EVP_MD_CTX_new();
    CHECK(identity != NULL &&
          EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, identity) == 1 &&
          EVP_DigestVerify(md, ecdh_sig, ecdh_sig_len, signed_point + sizeof label,
                           97 + 32) != 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(identity);

    struct stat st;
    snprintf(path, sizeof path, "%s/platform_key.pem", platform_dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* Bad arguments. */
    uint8_t out[EE_EVIDENCE_MAX_LEN], point[97];
    size_t out_len;
    uint64_t sid;
    memcpy(point, e + 110, 97);
    CHECK(ee_enclave_open_session(out, sizeof out, &out_len, &sid, c.nonce, 15, point, 97,
                                  (const uint8_t *)platform_dir,
                                  strlen(platform_dir)) == EE_ERR_ARGUMENT);
    point[96] ^= 1; /* off the curve */
    CHECK(ee_enclave_open_session(out, sizeof out, &out_len, &sid, c.nonce, 32, point, 97,
                                  (const uint8_t *)platform_dir,
                                  strlen(platform_dir)) == EE_ERR_ARGUMENT);
    point[96] ^= 1;
    CHECK(ee_enclave_open_session(out, 100, &out_len, &sid, c.nonce, 32, point, 97,
                                  (const uint8_t *)platform_dir,
                                  strlen(platform_dir)) == EE_ERR_CAPACITY);
    const char *nowhere = "/nonexistent/dir/for/platform";
    CHECK(ee_enclave_open_session(out, sizeof out, &out_len, &sid, c.nonce, 32, point, 97,
                                  (const uint8_t *)nowhere, strlen(nowhere)) == EE_ERR_PLATFORM);
    CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
    CHECK(ee_enclave_close_session(c.session_id) == EE_ERR_SESSION);
}

/* ---- packages -------------------------------------------------------------------------------- */

static void test_packages(void) {
    test_client c, other;
    CHECK(test_open(&c, platform_dir) == EE_OK);
    CHECK(test_open(&other, platform_dir) == EE_OK);
    static uint8_t blob[4096], package[4200], tampered[4200];
    uint16_t ids[1] = {1};
    uint8_t ceks[1][32];
    memcpy(ceks[0], CEK1, 32);
    uint8_t hash[32], wrong_hash[32];
    test_statement_hash(STATEMENT, hash);
    test_statement_hash("SELECT 2", wrong_hash);
    uint64_t q = 0;

    size_t blob_len = test_blob(blob, 5, STATEMENT, ids, ceks, 1, NULL, 0);
    size_t len = test_seal(&c, c.session_id, blob, blob_len, package);
    /* Wrong statement hash: refused, and the counter does not move. */
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, wrong_hash, 32) ==
          EE_ERR_PACKAGE);
    /* Every flipped byte of the cell, and truncations, fail authentication. */
    for (size_t i = 8; i < len; i++) {
        memcpy(tampered, package, len);
        tampered[i] ^= (uint8_t)(1u << (i % 8));
        CHECK(ee_enclave_begin_query(&q, c.session_id, tampered, len, hash, 32) == EE_ERR_AUTH);
    }
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len - 1, hash, 32) == EE_ERR_AUTH);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, 9, hash, 32) == EE_ERR_AUTH);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, 7, hash, 32) == EE_ERR_PACKAGE);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 31) == EE_ERR_ARGUMENT);
    /* Another session's id, in the argument or in the prefix. */
    CHECK(ee_enclave_begin_query(&q, other.session_id, package, len, hash, 32) ==
          EE_ERR_SESSION);
    CHECK(ee_enclave_begin_query(&q, 12345, package, len, hash, 32) == EE_ERR_SESSION);
    /* Sealed under another session's key: the MAC fails. */
    size_t foreign = test_seal(&other, c.session_id, blob, blob_len, tampered);
    CHECK(ee_enclave_begin_query(&q, c.session_id, tampered, foreign, hash, 32) == EE_ERR_AUTH);

    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_OK);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    CHECK(ee_enclave_end_query(q) == EE_ERR_QUERY);
    /* Replay, and a lower counter. */
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_REPLAY);
    blob_len = test_blob(blob, 4, STATEMENT, ids, ceks, 1, NULL, 0);
    len = test_seal(&c, c.session_id, blob, blob_len, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_REPLAY);

    /* Malformed blobs: short, long, duplicate key ids, grants for unknown keys or codes. */
    blob_len = test_blob(blob, 6, STATEMENT, ids, ceks, 1, NULL, 0);
    len = test_seal(&c, c.session_id, blob, blob_len - 1, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_PACKAGE);
    blob[blob_len] = 0;
    len = test_seal(&c, c.session_id, blob, blob_len + 1, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_PACKAGE);
    uint16_t twice[2] = {1, 1};
    uint8_t two[2][32];
    memcpy(two[0], CEK1, 32);
    memcpy(two[1], CEK2, 32);
    blob_len = test_blob(blob, 6, STATEMENT, twice, two, 2, NULL, 0);
    len = test_seal(&c, c.session_id, blob, blob_len, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_PACKAGE);
    test_grant bad[3] = {{9, EE_OP_EQ, EE_TYPE_INT64, NULL, 0},
                         {1, 0, EE_TYPE_INT64, NULL, 0},
                         {1, EE_OP_EQ, 13, NULL, 0}};
    for (int i = 0; i < 3; i++) {
        blob_len = test_blob(blob, 6, STATEMENT, ids, ceks, 1, &bad[i], 1);
        len = test_seal(&c, c.session_id, blob, blob_len, package);
        CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) ==
              EE_ERR_PACKAGE);
    }
    /* None of the refusals advanced the counter: 6 is still fresh. */
    blob_len = test_blob(blob, 6, STATEMENT, ids, ceks, 1, NULL, 0);
    len = test_seal(&c, c.session_id, blob, blob_len, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_OK);

    /* At most EE_MAX_QUERIES_PER_SESSION open query contexts. */
    uint64_t open[EE_MAX_QUERIES_PER_SESSION];
    open[0] = q;
    for (int i = 1; i < EE_MAX_QUERIES_PER_SESSION; i++) {
        blob_len = test_blob(blob, 6 + i, STATEMENT, ids, ceks, 1, NULL, 0);
        len = test_seal(&c, c.session_id, blob, blob_len, package);
        CHECK(ee_enclave_begin_query(&open[i], c.session_id, package, len, hash, 32) == EE_OK);
    }
    blob_len = test_blob(blob, 1000, STATEMENT, ids, ceks, 1, NULL, 0);
    len = test_seal(&c, c.session_id, blob, blob_len, package);
    CHECK(ee_enclave_begin_query(&q, c.session_id, package, len, hash, 32) == EE_ERR_LIMIT);
    /* Closing the session ends every query context it opened. */
    CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
    for (int i = 0; i < EE_MAX_QUERIES_PER_SESSION; i++) {
        CHECK(ee_enclave_end_query(open[i]) == EE_ERR_QUERY);
    }
    CHECK(ee_enclave_close_session(other.session_id) == EE_OK);
    CHECK(ee_test_secret_outstanding() == 0);
}

/* ---- operators ------------------------------------------------------------------------------- */

static void test_compare_and_authorization(test_client *c) {
    uint8_t comparand[80], probe[80], between[200], in_list[300];
    size_t comparand_len = int_cell(CEK1, 10, comparand);
    size_t probe_len = int_cell(CEK1, 11, probe);
    /* BETWEEN 5 AND 10 */
    size_t at = 0;
    uint8_t lo[80], hi[80];
    size_t lo_len = int_cell(CEK1, 5, lo), hi_len = int_cell(CEK1, 10, hi);
    memcpy(between, &(uint32_t){(uint32_t)lo_len}, 4); /* the host is little-endian */
    memcpy(between + 4, lo, lo_len);
    memcpy(between + 4 + lo_len, &(uint32_t){(uint32_t)hi_len}, 4);
    memcpy(between + 8 + lo_len, hi, hi_len);
    size_t between_len = 8 + lo_len + hi_len;
    /* IN (3, 10, -7) */
    int64_t items[3] = {3, 10, -7};
    memcpy(in_list, &(uint32_t){3}, 4);
    at = 4;
    for (int i = 0; i < 3; i++) {
        uint8_t item[80];
        size_t item_len = int_cell(CEK1, items[i], item);
        memcpy(in_list + at, &(uint32_t){(uint32_t)item_len}, 4);
        memcpy(in_list + at + 4, item, item_len);
        at += 4 + item_len;
    }
    size_t in_len = at;

    test_grant grants[] = {
        {1, EE_OP_EQ, EE_TYPE_INT64, comparand, comparand_len},
        {1, EE_OP_LT, EE_TYPE_INT64, comparand, comparand_len},
        {1, EE_OP_GE, EE_TYPE_INT64, NULL, 0},
        {1, EE_OP_BETWEEN, EE_TYPE_INT64, between, between_len},
        {1, EE_OP_IN, EE_TYPE_INT64, in_list, in_len},
    };
    uint64_t q = begin(c, grants, 5);
    cells col, right;
    cells_init(&col);
    cells_init(&right);
    int64_t values[6] = {10, -7, 0, 5, 11, 3};
    int64_t others[6] = {9, -7, 1, 5, 0, 3};
    for (int i = 0; i < 6; i++) {
        cells_int(&col, CEK1, i == 2 ? NULL : &values[i]);
        cells_int(&right, CEK1, i == 4 ? NULL : &others[i]);
    }
    uint8_t out[8];
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_OK);
    uint8_t eq[6] = {1, 0, 2, 0, 0, 0};
    CHECK(memcmp(out, eq, 6) == 0);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_LT, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_OK);
    uint8_t lt[6] = {0, 1, 2, 1, 0, 1};
    CHECK(memcmp(out, lt, 6) == 0);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_GE, NULL, 0, ROWS(&col),
                             ROWS(&right)) == EE_OK);
    uint8_t ge[6] = {1, 1, 2, 1, 2, 1};
    CHECK(memcmp(out, ge, 6) == 0);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_BETWEEN, between, between_len,
                             ROWS(&col), NO_ROWS) == EE_OK);
    uint8_t bt[6] = {1, 0, 2, 1, 0, 0};
    CHECK(memcmp(out, bt, 6) == 0);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_IN, in_list, in_len, ROWS(&col),
                             NO_ROWS) == EE_OK);
    uint8_t in[6] = {1, 1, 2, 0, 0, 1};
    CHECK(memcmp(out, in, 6) == 0);

    /* Unauthorized: another constant, operator, type or key; column-pair without a grant. */
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_EQ, probe, probe_len, ROWS(&col),
                             NO_ROWS) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_GT, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_FLOAT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_compare(out, 8, q, 2, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_EQ, NULL, 0, ROWS(&col),
                             ROWS(&right)) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_compare(out, 8, q + 1, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_QUERY);
    /* Bad shapes: small output, right rows where none belong, a tampered cell. */
    CHECK(ee_enclave_compare(out, 5, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_CAPACITY);
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), ROWS(&right)) == EE_ERR_ARGUMENT);
    col.data[col.offsets[3] + 50] ^= 1;
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_AUTH);
    col.data[col.offsets[3] + 50] ^= 1;
    /* Empty batches and batches of one. */
    col.count = 0;
    CHECK(ee_enclave_compare(NULL, 0, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_OK);
    col.count = 1;
    CHECK(ee_enclave_compare(out, 1, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_OK &&
          out[0] == 1);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    CHECK(ee_enclave_compare(out, 1, q, 1, EE_TYPE_INT64, EE_OP_EQ, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_ERR_QUERY);
    cells_free(&col);
    cells_free(&right);
}

static void test_like(test_client *c) {
    const char *texts[] = {"abc", "aXc", "ac", "a%c", "a\xc3\xa9" "c", "abcabc", NULL};
    const char *patterns[] = {"a_c", "a%c", "a!%c", "%c%c", "a%", "_"};
    uint8_t expected[6][7] = {
        {1, 1, 0, 1, 1, 0, 2}, /* _ is one code point, é included */
        {1, 1, 1, 1, 1, 1, 2},
        {0, 0, 0, 1, 0, 0, 2}, /* escaped % */
        {0, 0, 0, 0, 0, 1, 2},
        {1, 1, 1, 1, 1, 1, 2},
        {0, 0, 0, 0, 0, 0, 2},
    };
    cells col;
    cells_init(&col);
    for (int i = 0; i < 7; i++) cells_add(&col, CEK1, texts[i], texts[i] ? strlen(texts[i]) : 0);
    for (int p = 0; p < 6; p++) {
        uint8_t constant[120];
        uint32_t escape = '!';
        memcpy(constant, &escape, 4);
        size_t len = 4 + test_cell(CEK1, patterns[p], strlen(patterns[p]), constant + 4);
        test_grant grant = {1, EE_OP_LIKE, EE_TYPE_UTF8, constant, len};
        uint64_t q = begin(c, &grant, 1);
        uint8_t out[7];
        CHECK(ee_enclave_compare(out, 7, q, 1, EE_TYPE_UTF8, EE_OP_LIKE, constant, len,
                                 ROWS(&col), NO_ROWS) == EE_OK);
        for (int i = 0; i < 7; i++) CHECK(out[i] == expected[p][i]);
        CHECK(ee_enclave_end_query(q) == EE_OK);
    }
    /* LIKE on a number is a type error, even when authorized. */
    uint8_t constant[120];
    memset(constant, 0, 4);
    size_t len = 4 + int_cell(CEK1, 1, constant + 4);
    test_grant grant = {1, EE_OP_LIKE, EE_TYPE_INT64, constant, len};
    uint64_t q = begin(c, &grant, 1);
    uint8_t out[7];
    CHECK(ee_enclave_compare(out, 7, q, 1, EE_TYPE_INT64, EE_OP_LIKE, constant, len, ROWS(&col),
                             NO_ROWS) == EE_ERR_TYPE);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    cells_free(&col);
}

static void test_rank_orders(test_client *c) {
    test_grant grants[] = {{1, EE_OP_RANK, EE_TYPE_FLOAT64, NULL, 0},
                           {1, EE_OP_GROUP, EE_TYPE_UTF16LE, NULL, 0},
                           {1, EE_OP_RANK, EE_TYPE_GUID, NULL, 0},
                           {1, EE_OP_RANK, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_RANK, EE_TYPE_DATETIMEOFFSET, NULL, 0}};
    uint64_t q = begin(c, grants, 5);
    int64_t out[8];
    cells col;

    /* Floats: -inf < -0.0 == 0.0 < 1 < NaN == NaN, and a NULL. */
    double floats[7] = {-INFINITY, 1.0, NAN, -NAN, -0.0, 0.0, 0};
    int64_t want_floats[7] = {0, 2, 3, 3, 1, 1, -1};
    cells_init(&col);
    for (int i = 0; i < 7; i++) cells_add(&col, CEK1, i < 6 ? &floats[i] : NULL, 8);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_FLOAT64, EE_OP_RANK, NULL, 0, ROWS(&col)) ==
          EE_OK);
    for (int i = 0; i < 7; i++) CHECK(out[i] == want_floats[i]);
    cells_free(&col);

    /* UTF-16LE by code point: "a" < U+E000 < U+1F600 (surrogates D83D DE00). */
    uint8_t utf16[3][4] = {{0x3d, 0xd8, 0x00, 0xde}, {0x00, 0xe0}, {0x61, 0x00}};
    size_t utf16_len[3] = {4, 2, 2};
    int64_t want_utf16[3] = {2, 1, 0};
    cells_init(&col);
    for (int i = 0; i < 3; i++) cells_add(&col, CEK1, utf16[i], utf16_len[i]);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_UTF16LE, EE_OP_GROUP, NULL, 0, ROWS(&col)) ==
          EE_OK);
    for (int i = 0; i < 3; i++) CHECK(out[i] == want_utf16[i]);
    cells_free(&col);

    /* GUIDs in .NET order sort by canonical text: 00000002-... > 00000001-ffff-... */
    uint8_t g1[16] = {1, 0, 0, 0, 0xff, 0xff}, g2[16] = {2, 0, 0, 0};
    cells_init(&col);
    cells_add(&col, CEK1, g2, 16);
    cells_add(&col, CEK1, g1, 16);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_GUID, EE_OP_RANK, NULL, 0, ROWS(&col)) == EE_OK);
    CHECK(out[0] == 1 && out[1] == 0);
    cells_free(&col);

    /* DECIMAL: -5 < -0 == 0 == 0 (long form) < 3 (short form) < 256 */
    uint8_t d[5][17] = {{0, 5}, {0, 0}, {1, 0}, {1, 3}, {1, 0, 1}};
    size_t d_len[5] = {17, 17, 5, 2, 17};
    int64_t want_d[5] = {0, 1, 1, 2, 3};
    cells_init(&col);
    for (int i = 0; i < 5; i++) cells_add(&col, CEK1, d[i], d_len[i]);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_DECIMAL, EE_OP_RANK, NULL, 0, ROWS(&col)) ==
          EE_OK);
    for (int i = 0; i < 5; i++) CHECK(out[i] == want_d[i]);
    /* A DECIMAL with an illegal sign byte is an authentication failure. */
    uint8_t bad[2] = {7, 1};
    cells_add(&col, CEK1, bad, 2);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_DECIMAL, EE_OP_RANK, NULL, 0, ROWS(&col)) ==
          EE_ERR_AUTH);
    cells_free(&col);

    /* DATETIMEOFFSET orders by UTC date, then time; the offset is ignored. */
    uint8_t t[3][10] = {{0, 0, 0, 0, 1, 5, 0, 0, 0x4a, 0x01},  /* day 5, late, +05:30 */
                        {9, 0, 0, 0, 0, 4, 0, 0, 0, 0},        /* day 4 */
                        {0, 0, 0, 0, 1, 5, 0, 0, 0, 0}};       /* same instant as row 0 */
    cells_init(&col);
    for (int i = 0; i < 3; i++) cells_add(&col, CEK1, t[i], 10);
    CHECK(ee_enclave_rank(out, 8, q, 1, EE_TYPE_DATETIMEOFFSET, EE_OP_RANK, NULL, 0,
                          ROWS(&col)) == EE_OK);
    CHECK(out[0] == 1 && out[1] == 0 && out[2] == 1);
    cells_free(&col);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* Decrypts aggregate results with the codec (a separately tested component). */
static size_t decrypt_results(const uint8_t *data, size_t data_len, const int64_t *offsets,
                              size_t count, uint8_t *plain, int64_t *plain_offsets) {
    int32_t offsets32[16];
    uint8_t validity[2] = {0, 0};
    for (size_t i = 0; i <= count; i++) offsets32[i] = (int32_t)offsets[i];
    for (size_t i = 0; i < count; i++) {
        if (offsets[i + 1] > offsets[i]) validity[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    uint64_t key = 0;
    size_t out_len = 0, failed = 0;
    CHECK(ee_key_load(&key, CEK1, 32) == EE_OK);
    CHECK(ee_cell_decrypt_batch(plain, 4096, &out_len, plain_offsets, count + 1, &failed, key,
                                offsets32, count + 1, data, data_len, validity, 2, 0,
                                count) == EE_OK);
    CHECK(ee_key_free(key) == EE_OK);
    return out_len;
}

static void test_aggregates(test_client *c) {
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_MIN, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_COUNT_DISTINCT, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_AVG, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_SUM, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_SUM, EE_TYPE_UTF8, NULL, 0}};
    uint64_t q = begin(c, grants, 6);
    cells col;
    cells_init(&col);
    int64_t values[7] = {5, -3, 5, 0, 7, 100, 2};
    int64_t groups[7] = {0, 0, 0, 2, 2, -1, 0};
    for (int i = 0; i < 7; i++) cells_int(&col, CEK1, i == 3 ? NULL : &values[i]);
    uint8_t out[1024], plain[4096];
    int64_t offsets[4], plain_offsets[4];
    size_t out_len = 0;

    /* SUM: group 0 = 5 - 3 + 5 + 2 = 9, group 1 empty (null), group 2 = 7 (row 3 is NULL). */
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_INT64,
                               EE_OP_SUM, NULL, 0, ROWS(&col), groups, 7, 3, 0) == EE_OK);
    CHECK(offsets[2] == offsets[1]); /* the empty group */
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    uint8_t nine[17] = {1, 9}, seven[17] = {1, 7};
    CHECK(plain_offsets[1] == 17 && memcmp(plain, nine, 17) == 0);
    CHECK(plain_offsets[3] - plain_offsets[2] == 17 && memcmp(plain + 17, seven, 17) == 0);

    /* MIN: -3 and 7, freshly encrypted (no input cell is copied out). */
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_INT64,
                               EE_OP_MIN, NULL, 0, ROWS(&col), groups, 7, 3, 0) == EE_OK);
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    int64_t min0 = 0, min2 = 0;
    memcpy(&min0, plain, 8);
    memcpy(&min2, plain + 8, 8);
    CHECK(min0 == -3 && min2 == 7);
    for (size_t i = 0; i < col.count; i++) {
        CHECK(memcmp(out, col.data + col.offsets[i], 65) != 0);
    }

    /* COUNT DISTINCT: 3 ({5, -3, 2}), 0 for the empty group (encrypted, not null), 1. */
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_INT64,
                               EE_OP_COUNT_DISTINCT, NULL, 0, ROWS(&col), groups, 7, 3,
                               0) == EE_OK);
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    int64_t counts[3];
    memcpy(counts, plain, 24);
    CHECK(counts[0] == 3 && counts[1] == 0 && counts[2] == 1);

    /* AVG: 9 / 4 = 2.25 */
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_INT64,
                               EE_OP_AVG, NULL, 0, ROWS(&col), groups, 7, 3, 0) == EE_OK);
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    double average = 0;
    memcpy(&average, plain, 8);
    CHECK(average == 2.25);

    /* Bad group ids, a too small output, SUM on text. */
    int64_t bad_groups[7] = {0, 0, 0, 3, 0, 0, 0};
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_INT64,
                               EE_OP_SUM, NULL, 0, ROWS(&col), bad_groups, 7, 3,
                               0) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_aggregate(out, 100, &out_len, offsets, 4, q, 1, EE_TYPE_INT64, EE_OP_SUM,
                               NULL, 0, ROWS(&col), groups, 7, 3, 0) == EE_ERR_CAPACITY);
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_UTF8,
                               EE_OP_SUM, NULL, 0, ROWS(&col), groups, 7, 3, 0) == EE_ERR_TYPE);
    cells_free(&col);

    /* DECIMAL overflow: two values of 6 * 10^37 exceed 10^38. 6e37 = 0x2D2357... as 16 LE bytes
     * is computed here by repeated multiplication, independently of the enclave. */
    unsigned __int128 big = 6;
    for (int i = 0; i < 37; i++) big *= 10;
    uint8_t dec[17] = {1};
    for (int i = 0; i < 16; i++) dec[1 + i] = (uint8_t)(big >> (8 * i));
    cells_init(&col);
    cells_add(&col, CEK1, dec, 17);
    cells_add(&col, CEK1, dec, 17);
    int64_t one_group[2] = {0, 0};
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_DECIMAL,
                               EE_OP_SUM, NULL, 0, ROWS(&col), one_group, 2, 1,
                               0) == EE_ERR_OVERFLOW);
    col.count = 1;
    CHECK(ee_enclave_aggregate(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_DECIMAL,
                               EE_OP_SUM, NULL, 0, ROWS(&col), one_group, 1, 1, 0) == EE_OK);
    cells_free(&col);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

static void test_transform(test_client *c) {
    uint8_t reencrypt[3] = {2, 0, EE_CELL_DETERMINISTIC};
    uint8_t from_key1[3] = {1, 0, EE_CELL_DETERMINISTIC};
    test_grant grants[] = {{1, EE_OP_REENCRYPT, EE_TYPE_BYTES, reencrypt, 3},
                           {2, EE_OP_REENCRYPT_TARGET, EE_TYPE_BYTES, from_key1, 3},
                           {2, EE_OP_ENCRYPT, EE_TYPE_BYTES, NULL, 0}};
    uint64_t q = begin(c, grants, 3);
    cells col;
    cells_init(&col);
    cells_add(&col, CEK1, "hello", 5);
    cells_add(&col, CEK1, NULL, 0);
    cells_add(&col, CEK1, "", 0);
    uint8_t out[512];
    int64_t offsets[4];
    size_t out_len = 0;
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_BYTES,
                               EE_OP_REENCRYPT, reencrypt, 3, ROWS(&col)) == EE_OK);
    /* Deterministic under CEK2: exactly the oracle's deterministic cell. */
    uint8_t iv[16], want[80];
    oracle_deterministic_iv(CEK2, (const uint8_t *)"hello", 5, iv);
    size_t want_len = oracle_cell(CEK2, (const uint8_t *)"hello", 5, iv, 0, want);
    CHECK(offsets[1] == (int64_t)want_len && memcmp(out, want, want_len) == 0);
    CHECK(offsets[2] == offsets[1] && offsets[3] - offsets[2] == 65);
    /* ENCRYPT with key 2 was granted, with key 1 it was not. */
    int32_t pt_offsets[2] = {0, 3};
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 4, q, 1, EE_TYPE_BYTES,
                               EE_OP_ENCRYPT, NULL, 0, pt_offsets, 2, (const uint8_t *)"abc", 3,
                               NULL, 0, 0, 1) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 4, q, 2, EE_TYPE_BYTES,
                               EE_OP_ENCRYPT, NULL, 0, pt_offsets, 2, (const uint8_t *)"abc", 3,
                               NULL, 0, 0, 1) == EE_OK);
    CHECK(out_len == 65);
    cells_free(&col);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* REENCRYPT's target needs its own REENCRYPT_TARGET entry for this source and mode; ENCRYPT on
 * the target does not stand in for it, and the target entry allows no ENCRYPT (no host-chosen
 * plaintext goes under the target key) and no call of its own. */
static void test_reencrypt_target_authorization(test_client *c) {
    uint8_t deterministic[3] = {2, 0, EE_CELL_DETERMINISTIC};
    uint8_t randomized[3] = {2, 0, EE_CELL_RANDOMIZED};
    uint8_t from_key1[3] = {1, 0, EE_CELL_DETERMINISTIC};
    cells col;
    cells_init(&col);
    cells_add(&col, CEK1, "hello", 5);
    uint8_t out[512];
    int64_t offsets[4];
    size_t out_len = 0;
    int32_t pt_offsets[2] = {0, 3};

    /* ENCRYPT on the target only: REENCRYPT is refused. */
    test_grant encrypt_only[] = {{1, EE_OP_REENCRYPT, EE_TYPE_BYTES, deterministic, 3},
                                 {2, EE_OP_ENCRYPT, EE_TYPE_BYTES, NULL, 0}};
    uint64_t q = begin(c, encrypt_only, 2);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 1, EE_TYPE_BYTES,
                               EE_OP_REENCRYPT, deterministic, 3, ROWS(&col)) ==
          EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_end_query(q) == EE_OK);

    /* The target entry of a rotation: REENCRYPT works, ENCRYPT under the target does not, in
     * either mode, nor does a call with the authorization-only code or another mode. */
    test_grant rotation[] = {{1, EE_OP_REENCRYPT, EE_TYPE_BYTES, deterministic, 3},
                             {1, EE_OP_REENCRYPT, EE_TYPE_BYTES, randomized, 3},
                             {2, EE_OP_REENCRYPT_TARGET, EE_TYPE_BYTES, from_key1, 3}};
    q = begin(c, rotation, 3);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 1, EE_TYPE_BYTES,
                               EE_OP_REENCRYPT, deterministic, 3, ROWS(&col)) == EE_OK);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 1, EE_TYPE_BYTES,
                               EE_OP_REENCRYPT, randomized, 3, ROWS(&col)) ==
          EE_ERR_NOT_AUTHORIZED);
    uint8_t mode_byte = EE_CELL_DETERMINISTIC;
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 2, EE_TYPE_BYTES,
                               EE_OP_ENCRYPT, NULL, 0, pt_offsets, 2, (const uint8_t *)"abc", 3,
                               NULL, 0, 0, 1) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 2, EE_TYPE_BYTES,
                               EE_OP_ENCRYPT, &mode_byte, 1, pt_offsets, 2,
                               (const uint8_t *)"abc", 3, NULL, 0, 0,
                               1) == EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_transform(out, sizeof out, &out_len, offsets, 2, q, 2, EE_TYPE_BYTES,
                               EE_OP_REENCRYPT_TARGET, from_key1, 3, ROWS(&col)) ==
          EE_ERR_ARGUMENT);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    cells_free(&col);
}

/* Many rows: more than one decrypt chunk, against values computed here. */
static void test_large_batch(test_client *c) {
    uint8_t comparand[80];
    size_t comparand_len = int_cell(CEK1, 0, comparand);
    test_grant grants[] = {{1, EE_OP_GT, EE_TYPE_INT64, comparand, comparand_len},
                           {1, EE_OP_RANK, EE_TYPE_INT64, NULL, 0}};
    uint64_t q = begin(c, grants, 2);
    cells col;
    cells_init(&col);
    int64_t values[3000];
    for (int i = 0; i < 3000; i++) {
        values[i] = (int64_t)(rng_next() % 201) - 100;
        cells_int(&col, CEK1, i % 17 == 0 ? NULL : &values[i]);
    }
    uint8_t *out = malloc(3000);
    int64_t *ranks = malloc(3000 * sizeof *ranks);
    CHECK(ee_enclave_compare(out, 3000, q, 1, EE_TYPE_INT64, EE_OP_GT, comparand, comparand_len,
                             ROWS(&col), NO_ROWS) == EE_OK);
    CHECK(ee_enclave_rank(ranks, 3000, q, 1, EE_TYPE_INT64, EE_OP_RANK, NULL, 0, ROWS(&col)) ==
          EE_OK);
    int present[201] = {0};
    for (int i = 0; i < 3000; i++) {
        if (i % 17 != 0) present[values[i] + 100] = 1;
    }
    for (int i = 0; i < 3000; i++) {
        if (i % 17 == 0) {
            CHECK(out[i] == EE_NULL && ranks[i] == -1);
            continue;
        }
        CHECK(out[i] == (values[i] > 0));
        int64_t below = 0;
        for (int v = 0; v < values[i] + 100; v++) below += present[v];
        CHECK(ranks[i] == below);
    }
    free(out);
    free(ranks);
    cells_free(&col);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* ---- conjunctions (ee_enclave_compare_and, ee_tristate_pack) -------------------------------- */

static void test_compare_and(test_client *c) {
    uint8_t five[80], ten[80];
    size_t five_len = int_cell(CEK1, 5, five), ten_len = int_cell(CEK1, 10, ten);
    test_grant grants[] = {
        {1, EE_OP_GE, EE_TYPE_INT64, five, five_len},
        {1, EE_OP_LT, EE_TYPE_INT64, ten, ten_len},
    };
    uint64_t q = begin(c, grants, 2);
    cells x, y;
    cells_init(&x);
    cells_init(&y);
    /* Rows: x >= 5 gives T, F, NULL, T, NULL, F; y < 10 gives T, T, F, NULL, NULL, NULL. */
    int64_t xs[6] = {7, 1, 0, 9, 0, 2}, ys[6] = {3, 4, 12, 0, 0, 0};
    for (int i = 0; i < 6; i++) {
        cells_int(&x, CEK1, i == 2 || i == 4 ? NULL : &xs[i]);
        cells_int(&y, CEK1, i >= 3 ? NULL : &ys[i]);
    }
    uint8_t state[8];
    memset(state, EE_TRUE, sizeof state);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                 ROWS(&x), NO_ROWS) == EE_OK);
    uint8_t first[6] = {EE_TRUE, EE_FALSE, EE_NULL, EE_TRUE, EE_NULL, EE_FALSE};
    CHECK(memcmp(state, first, 6) == 0);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_LT, ten, ten_len,
                                 ROWS(&y), NO_ROWS) == EE_OK);
    /* SQL's AND: T.T=T, F.T=F, NULL.F=F, T.NULL=NULL, NULL.NULL=NULL, F.NULL=F. */
    uint8_t both[6] = {EE_TRUE, EE_FALSE, EE_FALSE, EE_NULL, EE_NULL, EE_FALSE};
    CHECK(memcmp(state, both, 6) == 0);

    /* Short-circuit: a tampered y cell in a row already FALSE is never read ... */
    y.data[y.offsets[1] + 50] ^= 1;
    memcpy(state, first, 6);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_LT, ten, ten_len,
                                 ROWS(&y), NO_ROWS) == EE_OK);
    CHECK(memcmp(state, both, 6) == 0);
    /* ... but in a live row (TRUE, or NULL: not FALSE) it fails authentication, state zeroed. */
    memset(state, EE_TRUE, 6);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_LT, ten, ten_len,
                                 ROWS(&y), NO_ROWS) == EE_ERR_AUTH);
    CHECK(state[0] == 0 && state[3] == 0);
    memset(state, EE_NULL, 6);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_LT, ten, ten_len,
                                 ROWS(&y), NO_ROWS) == EE_ERR_AUTH);
    y.data[y.offsets[1] + 50] ^= 1;
    /* Each conjunct is authorized on its own, even when every row is already FALSE. */
    memset(state, EE_FALSE, 6);
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_GT, ten, ten_len,
                                 ROWS(&y), NO_ROWS) == EE_ERR_NOT_AUTHORIZED);
    /* A state byte that is no result, a short state, a NULL state. */
    memset(state, EE_TRUE, 6);
    state[4] = 3;
    CHECK(ee_enclave_compare_and(state, 8, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                 ROWS(&x), NO_ROWS) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and(state, 5, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                 ROWS(&x), NO_ROWS) == EE_ERR_CAPACITY);
    CHECK(ee_enclave_compare_and(NULL, 0, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                 ROWS(&x), NO_ROWS) == EE_ERR_ARGUMENT);

    /* Packing into Arrow's boolean layout: values bit for TRUE, validity bit unless NULL. */
    uint8_t values[2], validity[2];
    size_t nulls = 99;
    uint8_t nine[9] = {EE_TRUE, EE_FALSE, EE_NULL, EE_TRUE, EE_NULL,
                       EE_FALSE, EE_TRUE, EE_TRUE, EE_NULL};
    CHECK(ee_tristate_pack(values, 2, validity, 2, &nulls, nine, 9) == EE_OK);
    CHECK(values[0] == 0xC9 && values[1] == 0x00);
    CHECK(validity[0] == 0xEB && validity[1] == 0x00 && nulls == 3);
    CHECK(ee_tristate_pack(values, 1, validity, 2, &nulls, nine, 9) == EE_ERR_CAPACITY);
    nine[8] = 7;
    CHECK(ee_tristate_pack(values, 2, validity, 2, &nulls, nine, 9) == EE_ERR_ARGUMENT);
    CHECK(ee_tristate_pack(NULL, 0, NULL, 0, &nulls, NULL, 0) == EE_OK && nulls == 0);

    CHECK(ee_enclave_end_query(q) == EE_OK);
    cells_free(&x);
    cells_free(&y);
}

/* ---- idle expiry ----------------------------------------------------------------------------- */

static test_client expiry_clients[EE_MAX_SESSIONS + 1];

/* Sessions idle past EE_SESSION_IDLE_SECONDS are gone when named, and give up their slot to a
 * new session; sessions in use keep theirs. The clock is moved by the EE_TESTING hook. */
static void test_session_expiry(void) {
    test_client a, b;
    CHECK(test_open(&a, platform_dir) == EE_OK);
    CHECK(test_open(&b, platform_dir) == EE_OK);
    ee_test_advance_session_clock(EE_SESSION_IDLE_SECONDS - 10);
    uint64_t q = begin(&b, NULL, 0); /* b is used, a is not */
    CHECK(ee_enclave_end_query(q) == EE_OK);
    ee_test_advance_session_clock(20);
    uint8_t ceks[1][32];
    memcpy(ceks[0], CEK1, 32);
    /* a has been idle for the bound plus 10 s: expired, and reported like an unknown id. */
    CHECK(test_begin_query(&a, STATEMENT, ceks, 1, NULL, 0, &q) == EE_ERR_SESSION);
    CHECK(ee_enclave_close_session(a.session_id) == EE_ERR_SESSION);
    /* b, used 20 s ago, is live; exactly at the bound it is still live, one second past it not. */
    test_grant grant = {1, EE_OP_GE, EE_TYPE_INT64, NULL, 0};
    q = begin(&b, &grant, 1);
    cells col;
    cells_init(&col);
    int64_t v = 4;
    cells_int(&col, CEK1, &v);
    uint8_t out[8];
    ee_test_advance_session_clock(EE_SESSION_IDLE_SECONDS);
    /* An operator call through a query context is a use: it keeps the session alive. */
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_GE, NULL, 0, ROWS(&col),
                             ROWS(&col)) == EE_OK);
    CHECK(out[0] == EE_TRUE);
    ee_test_advance_session_clock(EE_SESSION_IDLE_SECONDS + 1);
    /* Expired: the query context went with its session (and its keys were wiped). */
    CHECK(ee_enclave_compare(out, 8, q, 1, EE_TYPE_INT64, EE_OP_GE, NULL, 0, ROWS(&col),
                             ROWS(&col)) == EE_ERR_QUERY);
    CHECK(ee_enclave_end_query(q) == EE_ERR_QUERY);
    CHECK(test_begin_query(&b, STATEMENT, ceks, 1, NULL, 0, &q) == EE_ERR_SESSION);
    cells_free(&col);
    CHECK(ee_test_secret_outstanding() == 0);

    /* Filling the session table twice is some 500 ECDH + ECDSA session opens: seconds natively,
     * over a minute under valgrind. The valgrind run sets EE_TEST_UNDER_VALGRIND and leaves this
     * part to the sanitizer run, which always does it. */
    if (getenv("EE_TEST_UNDER_VALGRIND") != NULL) {
        printf("session table flood: skipped under valgrind (run by the ASan build)\n");
        return;
    }

    /* A full table of live sessions refuses a new one... */
    size_t opened = 0;
    while (opened <= EE_MAX_SESSIONS && test_open(&expiry_clients[opened], platform_dir) == EE_OK) {
        opened++;
    }
    CHECK(opened >= 1 && opened <= EE_MAX_SESSIONS);
    test_client extra;
    CHECK(test_open(&extra, platform_dir) == EE_ERR_LIMIT);
    /* ...but once they are idle past the bound, a new session takes an expired one's slot, and
     * a session used since keeps its own: every slot but one is taken over, then the table is
     * full again. Client 0 is used first: opening the table full can take real seconds (under
     * valgrind, many), which would otherwise count against its idle time too. */
    q = begin(&expiry_clients[0], NULL, 0);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    ee_test_advance_session_clock(EE_SESSION_IDLE_SECONDS - 5);
    q = begin(&expiry_clients[0], NULL, 0);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    ee_test_advance_session_clock(10);
    test_client fresh;
    for (size_t i = 0; i + 1 < EE_MAX_SESSIONS; i++) {
        CHECK(test_open(&fresh, platform_dir) == EE_OK);
    }
    CHECK(test_open(&extra, platform_dir) == EE_ERR_LIMIT);
    q = begin(&expiry_clients[0], NULL, 0);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    for (size_t i = 1; i < opened; i++) {
        CHECK(ee_enclave_close_session(expiry_clients[i].session_id) == EE_ERR_SESSION);
    }
    /* Clean up: everything left expires, and closing an expired session still wipes it. */
    ee_test_advance_session_clock(EE_SESSION_IDLE_SECONDS + 1);
    CHECK(test_open(&fresh, platform_dir) == EE_OK);
    CHECK(ee_enclave_close_session(fresh.session_id) == EE_OK);
    CHECK(ee_test_secret_outstanding() == 0);
}

int main(void) {
    snprintf(platform_dir, sizeof platform_dir, "/tmp/ee_platform_XXXXXX");
    if (mkdtemp(platform_dir) == NULL) return 1;
    rng_fill(CEK1, 32);
    rng_fill(CEK2, 32);
    int32_t impls[2] = {EE_IMPL_PORTABLE, EE_IMPL_FAST};
    test_info_and_evidence();
    test_packages();
    for (int i = 0; i < 2; i++) {
        if (ee_cell_select_impl(impls[i]) != EE_OK) continue;
        int before = test_failures;
        test_client c;
        CHECK(test_open(&c, platform_dir) == EE_OK);
        test_compare_and_authorization(&c);
        test_compare_and(&c);
        test_like(&c);
        test_rank_orders(&c);
        test_aggregates(&c);
        test_transform(&c);
        test_reencrypt_target_authorization(&c);
        test_large_batch(&c);
        CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
        /* Every scratch buffer went back through the wiping free, on every path above. */
        CHECK(ee_test_secret_outstanding() == 0);
        printf("enclave %s: %s\n", impls[i] == EE_IMPL_FAST ? "fast" : "portable",
               test_failures == before ? "ok" : "FAILED");
    }
    if (ee_cell_select_impl(EE_IMPL_AUTO) != EE_OK) test_failures++;
    test_session_expiry();
    test_remove_platform_dir(platform_dir);
    printf("%d failure(s)\n", test_failures);
    return test_failures == 0 ? 0 : 1;
}

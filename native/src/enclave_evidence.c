/* enclave_evidence.c: the enclave's identity, its measurement, the simulated platform key, and
 * evidence format v2 (docs/attestation.md) with the ECDH key agreement of spec 5.5.
 *
 * All public-key cryptography goes through OpenSSL EVP. The identity key is made once per
 * process; each session's ECDH private key lives only for the duration of ee_evidence_make.
 * It must not persist anything but the platform key pair, and never writes a secret elsewhere.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "enclave_internal.h"

#ifndef EE_ENCLAVE_DEBUG
#define EE_ENCLAVE_DEBUG 0
#endif

#define SIG_CAP 128
#define IDENTITY_DER_CAP 512

/* ---- Measurement ----------------------------------------------------------------------------- */

static pthread_once_t measurement_once = PTHREAD_ONCE_INIT;
static uint8_t measurement[32];
static int measurement_ready = 0;

static int hash_file(const char *path, uint8_t out[32]) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    uint8_t buffer[65536];
    size_t n;
    while (ok && (n = fread(buffer, 1, sizeof buffer, file)) > 0) {
        ok = EVP_DigestUpdate(ctx, buffer, n) == 1;
    }
    ok = ok && !ferror(file) && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    fclose(file);
    return ok;
}

/* The measurement is the SHA-256 of the file that holds this code: the Python extension module
 * in production, the test executable in C tests. dladdr names it; /proc/self/exe covers an
 * executable started by a relative path from another directory. */
static void compute_measurement(void) {
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (dladdr((void *)&compute_measurement, &info) != 0 && info.dli_fname != NULL &&
        hash_file(info.dli_fname, measurement)) {
        measurement_ready = 1;
    } else if (hash_file("/proc/self/exe", measurement)) {
        measurement_ready = 1;
    }
}

ee_status ee_enclave_info(uint8_t out_measurement[32], uint32_t *out_svn, int32_t *out_debug) {
    if (out_measurement == NULL || out_svn == NULL || out_debug == NULL) return EE_ERR_ARGUMENT;
    if (pthread_once(&measurement_once, compute_measurement) != 0 || !measurement_ready) {
        return EE_ERR_INTERNAL;
    }
    memcpy(out_measurement, measurement, 32);
    *out_svn = EE_ENCLAVE_SVN;
    *out_debug = EE_ENCLAVE_DEBUG;
    return EE_OK;
}

/* ---- Identity key ---------------------------------------------------------------------------- */

static pthread_once_t identity_once = PTHREAD_ONCE_INIT;
static EVP_PKEY *identity_key = NULL;
static uint8_t identity_der[IDENTITY_DER_CAP];
static size_t identity_der_len = 0;

static EVP_PKEY *new_p384_key(void) {
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1 &&
        EVP_PKEY_CTX_set_group_name(ctx, "P-384") == 1) {
        if (EVP_PKEY_keygen(ctx, &key) != 1) key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return key;
}

static void make_identity(void) {
    EVP_PKEY *key = new_p384_key();
    if (key == NULL) return;
    int len = i2d_PUBKEY(key, NULL);
    if (len <= 0 || len > IDENTITY_DER_CAP) {
        EVP_PKEY_free(key);
        return;
    }
    uint8_t *cursor = identity_der;
    if (i2d_PUBKEY(key, &cursor) != len) {
        EVP_PKEY_free(key);
        return;
    }
    identity_der_len = (size_t)len;
    identity_key = key;
}

/* ---- Platform key ---------------------------------------------------------------------------- */

static int no_passphrase(char *buf, int size, int rwflag, void *userdata) {
    (void)buf, (void)size, (void)rwflag, (void)userdata;
    return -1; /* an encrypted platform key is unusable here, never a terminal prompt */
}

static int is_p384(EVP_PKEY *key) {
    char group[64];
    size_t group_len = 0;
    return key != NULL && EVP_PKEY_is_a(key, "EC") &&
           EVP_PKEY_get_group_name(key, group, sizeof group, &group_len) == 1 &&
           (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0);
}

static EVP_PKEY *read_private(const char *path) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    EVP_PKEY *key = PEM_read_PrivateKey(file, NULL, no_passphrase, NULL);
    fclose(file);
    if (!is_p384(key)) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

/* Writes a PEM file that must not exist yet, with the given mode from the start. */
static int write_new_pem(const char *path, EVP_PKEY *key, int private_key, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return errno == EEXIST ? -1 : 0;
    FILE *file = fdopen(fd, "wb");
    if (file == NULL) {
        close(fd);
        return 0;
    }
    int ok = private_key ? PEM_write_PrivateKey(file, key, NULL, NULL, 0, NULL, NULL) == 1
                         : PEM_write_PUBKEY(file, key) == 1;
    return fclose(file) == 0 && ok;
}

/* Loads <dir>/platform_key.pem, or creates it (0600, O_EXCL) with platform_key.pub.pem, the
 * layout of enclave/attestation/platform.py. NULL when the key is unusable. */
static EVP_PKEY *platform_key(const char *dir) {
    char private_path[4096], public_path[4096];
    if (snprintf(private_path, sizeof private_path, "%s/platform_key.pem", dir) >=
            (int)sizeof private_path ||
        snprintf(public_path, sizeof public_path, "%s/platform_key.pub.pem", dir) >=
            (int)sizeof public_path) {
        return NULL;
    }
    EVP_PKEY *key = NULL;
    if (access(private_path, F_OK) == 0) {
        key = read_private(private_path);
    } else {
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) return NULL;
        key = new_p384_key();
        int written = key != NULL ? write_new_pem(private_path, key, 1, 0600) : 0;
        if (written != 1) {
            EVP_PKEY_free(key);
            /* -1: another process created it first; use theirs. */
            key = written == -1 ? read_private(private_path) : NULL;
        }
    }
    if (key != NULL && access(public_path, F_OK) != 0 &&
        write_new_pem(public_path, key, 0, 0644) == 0) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

/* ---- Evidence -------------------------------------------------------------------------------- */

static int sign_sha384(EVP_PKEY *key, const uint8_t *msg, size_t msg_len, uint8_t sig[SIG_CAP],
                       size_t *sig_len) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    *sig_len = SIG_CAP;
    int ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, sig_len, msg, msg_len) == 1 && *sig_len <= 104;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The client's point as an EVP key; NULL unless it is a valid point on P-384. */
static EVP_PKEY *peer_key(const uint8_t point[97]) {
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
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &peer, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        peer = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    if (peer != NULL) {
        EVP_PKEY_CTX *check = EVP_PKEY_CTX_new(peer, NULL);
        if (check == NULL || EVP_PKEY_public_check(check) != 1) {
            EVP_PKEY_free(peer);
            peer = NULL;
        }
        EVP_PKEY_CTX_free(check);
    }
    return peer;
}

static void put_u16(uint8_t *p, size_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Domain separation for the identity key: its signature over ecdh_public || nonce is made over
 * this label first (NUL included), so it can never be taken for a signature made for another
 * purpose, should the key ever sign anything else. Evidence v1 signed without it. */
static const char ECDH_SIGNATURE_LABEL[] = "EnclaveSQL evidence v2";
#define ECDH_LABEL_LEN sizeof ECDH_SIGNATURE_LABEL

ee_status ee_evidence_make(uint8_t *out, size_t out_cap, size_t *out_len,
                           uint8_t out_session_key[32], const uint8_t *nonce, size_t nonce_len,
                           const uint8_t client_ecdh_public[97], const char *platform_dir) {
    ee_status status = EE_ERR_INTERNAL;
    EVP_PKEY *ecdh = NULL, *peer = NULL, *platform = NULL;
    EVP_PKEY_CTX *derive = NULL;
    uint8_t shared_x[48];
    size_t shared_len = sizeof shared_x;
    uint8_t report[175 + EE_NONCE_MAX_LEN];
    uint8_t signed_point[ECDH_LABEL_LEN + 97 + EE_NONCE_MAX_LEN];
    uint8_t platform_sig[SIG_CAP], ecdh_sig[SIG_CAP];
    size_t platform_sig_len = 0, ecdh_sig_len = 0;
    uint8_t point[97];
    size_t point_len = 0;
    uint8_t measured[32];
    uint32_t svn = 0;
    int32_t debug = 0;

    if (ee_enclave_info(measured, &svn, &debug) != EE_OK ||
        pthread_once(&identity_once, make_identity) != 0 || identity_key == NULL) {
        goto done;
    }
    peer = peer_key(client_ecdh_public);
    if (peer == NULL) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    ecdh = new_p384_key();
    if (ecdh == NULL ||
        EVP_PKEY_get_octet_string_param(ecdh, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                        sizeof point, &point_len) != 1 ||
        point_len != 97 || point[0] != 0x04) {
        goto done;
    }
    derive = EVP_PKEY_CTX_new(ecdh, NULL);
    if (derive == NULL || EVP_PKEY_derive_init(derive) != 1 ||
        EVP_PKEY_derive_set_peer(derive, peer) != 1 ||
        EVP_PKEY_derive(derive, shared_x, &shared_len) != 1 || shared_len != 48 ||
        EVP_Digest(shared_x, 48, out_session_key, NULL, EVP_sha256(), NULL) != 1) {
        goto done;
    }

    /* The report: magic, flags, measurement, svn, report_data, nonce_len, nonce, ecdh_public. */
    size_t report_len = 175 + nonce_len;
    memcpy(report, "EEV2", 4);
    put_u32(report + 4, debug ? 1u : 0u);
    memcpy(report + 8, measured, 32);
    put_u32(report + 40, svn);
    if (EVP_Digest(identity_der, identity_der_len, report + 44, NULL, EVP_sha256(), NULL) != 1) {
        goto done;
    }
    put_u16(report + 76, nonce_len);
    memcpy(report + 78, nonce, nonce_len);
    memcpy(report + 78 + nonce_len, point, 97);
    memcpy(signed_point, ECDH_SIGNATURE_LABEL, ECDH_LABEL_LEN);
    memcpy(signed_point + ECDH_LABEL_LEN, point, 97);
    memcpy(signed_point + ECDH_LABEL_LEN + 97, nonce, nonce_len);

    platform = platform_key(platform_dir);
    if (platform == NULL) {
        status = EE_ERR_PLATFORM;
        goto done;
    }
    if (!sign_sha384(platform, report, report_len, platform_sig, &platform_sig_len) ||
        !sign_sha384(identity_key, signed_point, ECDH_LABEL_LEN + 97 + nonce_len, ecdh_sig,
                     &ecdh_sig_len)) {
        goto done;
    }
    size_t total = report_len + 2 + platform_sig_len + 2 + identity_der_len + 2 + ecdh_sig_len;
    if (total > out_cap) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    uint8_t *w = out;
    memcpy(w, report, report_len);
    w += report_len;
    put_u16(w, platform_sig_len);
    memcpy(w + 2, platform_sig, platform_sig_len);
    w += 2 + platform_sig_len;
    put_u16(w, identity_der_len);
    memcpy(w + 2, identity_der, identity_der_len);
    w += 2 + identity_der_len;
    put_u16(w, ecdh_sig_len);
    memcpy(w + 2, ecdh_sig, ecdh_sig_len);
    *out_len = total;
    status = EE_OK;
done:
    if (status != EE_OK) {
        ee_wipe(out_session_key, 32);
        /* A refused point or an unreadable key leaves entries on OpenSSL's per-thread error
         * queue; clear them so they cannot surface in an unrelated later call. */
        ERR_clear_error();
    }
    ee_wipe(shared_x, sizeof shared_x);
    EVP_PKEY_CTX_free(derive);
    EVP_PKEY_free(ecdh); /* frees (and OpenSSL clears) the session's ECDH private key */
    EVP_PKEY_free(peer);
    EVP_PKEY_free(platform);
    return status;
}

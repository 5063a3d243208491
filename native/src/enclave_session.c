/* enclave_session.c: enclave sessions, the enclave package, and per-query contexts.
 *
 * A session holds the 32-byte session key, the last accepted package counter and the monotonic
 * time of its last use; one idle for EE_SESSION_IDLE_SECONDS is expired (wiped with its query
 * contexts) when next named or when a new session needs its slot. A query context
 * holds the CEKs and authorizations of one verified package. Both live in enclave-private tables
 * behind one mutex and are named by random 64-bit ids. It must verify a package's MAC before
 * parsing anything in it, advance the counter only after every check, and wipe every key on
 * every exit path. It never shares a key with the codec's key table.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and CLOCK_MONOTONIC under -std=c11 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "enclave_internal.h"

#define MAX_QUERIES 1024
#define BLOB_HEADER_LEN 56 /* 16 random bytes, i64 counter, 32-byte statement hash */
#define KEY_ENTRY_LEN 46
#define AUTHORIZATION_ENTRY_LEN 36

typedef struct session {
    uint64_t id; /* 0: free */
    uint8_t key[32];
    int64_t counter; /* the last accepted package counter; 0 before the first */
    int open_queries;
    int64_t last_used; /* monotonic seconds (session_clock) of the last open, package or key use */
} session;

typedef struct query_key {
    uint16_t cek_id;
    ee_cell_keys keys;
} query_key;

typedef struct authorization {
    uint16_t cek_id;
    uint8_t op;
    uint8_t type_code;
    uint8_t constant_hash[32];
} authorization;

typedef struct query {
    uint64_t id; /* 0: free */
    uint64_t session_id;
    query_key *keys; /* secret memory */
    size_t key_count;
    authorization *authorizations;
    size_t authorization_count;
} query;

static session sessions[EE_MAX_SESSIONS];
static query queries[MAX_QUERIES];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

#ifdef EE_TESTING
/* Test-only: seconds added to the monotonic clock, so a test can age sessions without sleeping. */
static int64_t clock_offset = 0;
void ee_test_advance_session_clock(int64_t seconds) {
    pthread_mutex_lock(&table_lock);
    clock_offset += seconds;
    pthread_mutex_unlock(&table_lock);
}
#endif

/* Monotonic seconds: wall-clock jumps (NTP, a host that sets the time) cannot age or revive a
 * session. Call with the lock held (the test offset is read under it). */
static int64_t session_clock(void) {
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) return 0;
    int64_t seconds = (int64_t)now.tv_sec;
#ifdef EE_TESTING
    seconds += clock_offset;
#endif
    return seconds;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Call with the lock held. */
static session *find_session(uint64_t id) {
    if (id == 0) return NULL;
    for (size_t i = 0; i < EE_MAX_SESSIONS; i++) {
        if (sessions[i].id == id) return &sessions[i];
    }
    return NULL;
}

static query *find_query(uint64_t id) {
    if (id == 0) return NULL;
    for (size_t i = 0; i < MAX_QUERIES; i++) {
        if (queries[i].id == id) return &queries[i];
    }
    return NULL;
}

/* A random id that names nothing live. Call with the lock held. */
static ee_status fresh_id(uint64_t *out) {
    for (int attempt = 0; attempt < 16; attempt++) {
        uint8_t bytes[8];
        if (RAND_bytes(bytes, sizeof bytes) != 1) return EE_ERR_RANDOM;
        uint64_t id = get_u64(bytes);
        if (id != 0 && find_session(id) == NULL && find_query(id) == NULL) {
            *out = id;
            return EE_OK;
        }
    }
    return EE_ERR_INTERNAL;
}

static void free_query_parts(query_key *keys, size_t key_count, authorization *authorizations) {
    ee_secret_free(keys, key_count * sizeof *keys);
    free(authorizations);
}

/* Wipes a query slot. Call with the lock held. */
static void drop_query(query *q) {
    free_query_parts(q->keys, q->key_count, q->authorizations);
    session *s = find_session(q->session_id);
    if (s != NULL && s->open_queries > 0) s->open_queries--;
    memset(q, 0, sizeof *q);
}

/* Wipes a session and every query context it opened. Call with the lock held. */
static void drop_session(session *s) {
    for (size_t i = 0; i < MAX_QUERIES; i++) {
        if (queries[i].id != 0 && queries[i].session_id == s->id) drop_query(&queries[i]);
    }
    ee_wipe(s, sizeof *s);
}

static int session_expired(const session *s, int64_t now) {
    return now - s->last_used > EE_SESSION_IDLE_SECONDS;
}

/* The live session named id, its use time refreshed; NULL when there is none. A session idle
 * past the bound is dropped here, so an expired id behaves exactly like a closed one. Call with
 * the lock held. */
static session *use_session(uint64_t id) {
    session *s = find_session(id);
    if (s == NULL) return NULL;
    int64_t now = session_clock();
    if (session_expired(s, now)) {
        drop_session(s);
        return NULL;
    }
    s->last_used = now;
    return s;
}

/* A slot for a new session: a free one, else the longest-idle expired one (wiped first), else
 * NULL. Live sessions are never evicted, so a flood of opens cannot push out a working client.
 * Call with the lock held. */
static session *free_session_slot(void) {
    session *oldest = NULL;
    int64_t now = session_clock();
    for (size_t i = 0; i < EE_MAX_SESSIONS; i++) {
        if (sessions[i].id == 0) return &sessions[i];
        if (session_expired(&sessions[i], now) &&
            (oldest == NULL || sessions[i].last_used < oldest->last_used)) {
            oldest = &sessions[i];
        }
    }
    if (oldest != NULL) drop_session(oldest);
    return oldest;
}

ee_status ee_enclave_open_session(uint8_t *out_evidence, size_t out_evidence_cap,
                                  size_t *out_evidence_len, uint64_t *out_session_id,
                                  const uint8_t *nonce, size_t nonce_len,
                                  const uint8_t *client_ecdh_public,
                                  size_t client_ecdh_public_len, const uint8_t *platform_dir,
                                  size_t platform_dir_len) {
    ee_status status;
    uint8_t session_key[32];
    uint8_t evidence[EE_EVIDENCE_MAX_LEN];
    uint8_t nonce_copy[EE_NONCE_MAX_LEN];
    uint8_t point[EE_ECDH_PUBLIC_LEN];
    char dir[4000];
    size_t evidence_len = 0;
    memset(session_key, 0, sizeof session_key);

    if (out_evidence == NULL || out_evidence_len == NULL || out_session_id == NULL ||
        nonce == NULL || client_ecdh_public == NULL || platform_dir == NULL) {
        return EE_ERR_ARGUMENT;
    }
    if (nonce_len < EE_NONCE_MIN_LEN || nonce_len > EE_NONCE_MAX_LEN ||
        client_ecdh_public_len != EE_ECDH_PUBLIC_LEN || platform_dir_len == 0 ||
        platform_dir_len >= sizeof dir) {
        return EE_ERR_ARGUMENT;
    }
    /* Copy every input in before looking at it. */
    memcpy(nonce_copy, nonce, nonce_len);
    memcpy(point, client_ecdh_public, sizeof point);
    memcpy(dir, platform_dir, platform_dir_len);
    dir[platform_dir_len] = '\0';
    if (point[0] != 0x04 || strlen(dir) != platform_dir_len) return EE_ERR_ARGUMENT;

    status = ee_evidence_make(evidence, sizeof evidence, &evidence_len, session_key, nonce_copy,
                              nonce_len, point, dir);
    if (status != EE_OK) goto done;
    if (evidence_len > out_evidence_cap) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    if (pthread_mutex_lock(&table_lock) != 0) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    status = EE_ERR_LIMIT;
    session *slot = free_session_slot();
    if (slot != NULL) {
        uint64_t id = 0;
        status = fresh_id(&id);
        if (status == EE_OK) {
            slot->id = id;
            memcpy(slot->key, session_key, 32);
            slot->counter = 0;
            slot->open_queries = 0;
            slot->last_used = session_clock();
            *out_session_id = id;
        }
    }
    pthread_mutex_unlock(&table_lock);
    if (status == EE_OK) {
        memcpy(out_evidence, evidence, evidence_len);
        *out_evidence_len = evidence_len;
    }
done:
    ee_wipe(session_key, sizeof session_key);
    return status;
}

ee_status ee_enclave_close_session(uint64_t session_id) {
    if (pthread_mutex_lock(&table_lock) != 0) return EE_ERR_INTERNAL;
    ee_status status = EE_ERR_SESSION;
    /* An expired session is dropped by use_session and reported like any unknown id. */
    session *s = use_session(session_id);
    if (s != NULL) {
        drop_session(s);
        status = EE_OK;
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

/* Parses a verified keys blob (spec 5.6 extended). Builds prepared keys and authorizations in
 * fresh memory the caller frees; EE_ERR_PACKAGE or EE_ERR_LIMIT for a blob that is not right. */
static ee_status parse_blob(const uint8_t *blob, size_t len, int64_t *counter,
                            uint8_t statement_hash[32], query_key **out_keys,
                            size_t *out_key_count, authorization **out_authorizations,
                            size_t *out_authorization_count) {
    ee_status status = EE_ERR_PACKAGE;
    query_key *keys = NULL;
    authorization *authorizations = NULL;
    size_t key_count = 0, authorization_count = 0;
    if (len < BLOB_HEADER_LEN + 2) goto fail;
    key_count = get_u16(blob + BLOB_HEADER_LEN);
    size_t at = BLOB_HEADER_LEN + 2 + KEY_ENTRY_LEN * key_count;
    if (len < at + 2) goto fail;
    authorization_count = get_u16(blob + at);
    if (len != at + 2 + AUTHORIZATION_ENTRY_LEN * authorization_count) goto fail;
    if (key_count > EE_MAX_QUERY_KEYS || authorization_count > EE_MAX_AUTHORIZATIONS) {
        status = EE_ERR_LIMIT;
        goto fail;
    }
    *counter = (int64_t)get_u64(blob + 16);
    memcpy(statement_hash, blob + 24, 32);

    keys = ee_secret_alloc(key_count * sizeof *keys);
    authorizations = malloc((authorization_count + 1) * sizeof *authorizations);
    if (keys == NULL || authorizations == NULL) {
        status = EE_ERR_INTERNAL;
        goto fail;
    }
    for (size_t k = 0; k < key_count; k++) {
        /* u32 database_id || 8-byte cek_md_version || u16 cek_id || 32-byte CEK; the first two
         * are fixed by this engine (one database, keys versioned by name) and not used. */
        const uint8_t *entry = blob + BLOB_HEADER_LEN + 2 + KEY_ENTRY_LEN * k;
        keys[k].cek_id = get_u16(entry + 12);
        for (size_t j = 0; j < k; j++) {
            if (keys[j].cek_id == keys[k].cek_id) goto fail;
        }
        status = ee_keys_prepare(&keys[k].keys, entry + 14);
        if (status != EE_OK) goto fail;
        status = EE_ERR_PACKAGE;
    }
    for (size_t a = 0; a < authorization_count; a++) {
        const uint8_t *entry = blob + at + 2 + AUTHORIZATION_ENTRY_LEN * a;
        authorization *grant = &authorizations[a];
        grant->cek_id = get_u16(entry);
        grant->op = entry[2];
        grant->type_code = entry[3];
        memcpy(grant->constant_hash, entry + 4, 32);
        int known_key = 0;
        for (size_t k = 0; k < key_count; k++) known_key |= keys[k].cek_id == grant->cek_id;
        int known_op = (grant->op >= EE_OP_EQ && grant->op <= EE_OP_ENCRYPT) ||
                       grant->op == EE_OP_SUM_EXPR || grant->op == EE_OP_AVG_EXPR ||
                       grant->op == EE_OP_REENCRYPT_TARGET || grant->op == EE_OP_TOP_K;
        if (!known_key || !known_op ||
            !ee_type_known(grant->type_code)) {
            goto fail;
        }
    }
    *out_keys = keys;
    *out_key_count = key_count;
    *out_authorizations = authorizations;
    *out_authorization_count = authorization_count;
    return EE_OK;
fail:
    free_query_parts(keys, key_count, authorizations);
    return status;
}

ee_status ee_enclave_begin_query(uint64_t *out_query_id, uint64_t session_id,
                                 const uint8_t *package, size_t package_len,
                                 const uint8_t *statement_hash, size_t statement_hash_len) {
    ee_status status;
    ee_cell_keys session_keys;
    uint8_t session_key[32];
    uint8_t wanted_hash[32], package_hash[32];
    uint8_t *copy = NULL, *blob = NULL;
    size_t blob_len = 0, blob_cap = 0;
    int64_t counter = 0, last_counter = 0;
    query_key *keys = NULL;
    authorization *authorizations = NULL;
    size_t key_count = 0, authorization_count = 0;
    memset(&session_keys, 0, sizeof session_keys);
    memset(session_key, 0, sizeof session_key);

    if (out_query_id == NULL || (package == NULL && package_len > 0) || statement_hash == NULL ||
        statement_hash_len != EE_STATEMENT_HASH_LEN) {
        return EE_ERR_ARGUMENT;
    }
    /* Copy the package in before anything reads it. */
    copy = malloc(package_len > 0 ? package_len : 1);
    if (copy == NULL) return EE_ERR_INTERNAL;
    if (package_len > 0) memcpy(copy, package, package_len);
    memcpy(wanted_hash, statement_hash, 32);

    if (pthread_mutex_lock(&table_lock) != 0) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    session *s = use_session(session_id);
    if (s != NULL) {
        memcpy(session_key, s->key, 32);
        last_counter = s->counter;
    }
    pthread_mutex_unlock(&table_lock);
    status = EE_ERR_SESSION;
    if (s == NULL) goto done;
    if (package_len < 8) {
        status = EE_ERR_PACKAGE;
        goto done;
    }
    if (get_u64(copy) != session_id) goto done;

    /* Verify, then decrypt (the cell layer checks the MAC before writing any plaintext). */
    status = ee_keys_prepare(&session_keys, session_key);
    if (status != EE_OK) goto done;
    status = ee_decrypt_constant(&blob, &blob_len, &blob_cap, &session_keys, EE_TYPE_BYTES,
                                 copy + 8, package_len - 8);
    if (status != EE_OK) goto done;
    status = parse_blob(blob, blob_len, &counter, package_hash, &keys, &key_count,
                        &authorizations, &authorization_count);
    if (status != EE_OK) goto done;
    if (counter <= last_counter) {
        status = EE_ERR_REPLAY;
        goto done;
    }
    if (CRYPTO_memcmp(package_hash, wanted_hash, 32) != 0) {
        status = EE_ERR_PACKAGE;
        goto done;
    }

    /* Commit: the session may have moved on (or closed) since we looked. */
    if (pthread_mutex_lock(&table_lock) != 0) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    s = find_session(session_id);
    if (s == NULL) {
        status = EE_ERR_SESSION;
    } else if (counter <= s->counter) {
        status = EE_ERR_REPLAY;
    } else if (s->open_queries >= EE_MAX_QUERIES_PER_SESSION) {
        status = EE_ERR_LIMIT;
    } else {
        status = EE_ERR_LIMIT;
        for (size_t i = 0; i < MAX_QUERIES; i++) {
            if (queries[i].id != 0) continue;
            uint64_t id = 0;
            status = fresh_id(&id);
            if (status == EE_OK) {
                queries[i].id = id;
                queries[i].session_id = session_id;
                queries[i].keys = keys;
                queries[i].key_count = key_count;
                queries[i].authorizations = authorizations;
                queries[i].authorization_count = authorization_count;
                keys = NULL;
                authorizations = NULL;
                s->counter = counter;
                s->open_queries++;
                *out_query_id = id;
            }
            break;
        }
    }
    pthread_mutex_unlock(&table_lock);
done:
    free_query_parts(keys, key_count, authorizations);
    ee_secret_free(blob, blob_cap);
    ee_wipe(&session_keys, sizeof session_keys);
    ee_wipe(session_key, sizeof session_key);
    free(copy);
    return status;
}

ee_status ee_enclave_end_query(uint64_t query_id) {
    if (pthread_mutex_lock(&table_lock) != 0) return EE_ERR_INTERNAL;
    ee_status status = EE_ERR_QUERY;
    query *q = find_query(query_id);
    if (q != NULL) {
        drop_query(q);
        status = EE_OK;
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

ee_status ee_query_key(ee_cell_keys *out, uint64_t query_id, uint16_t cek_id, int32_t op,
                       int32_t type_code, const uint8_t *constant, size_t constant_len) {
    uint8_t hash[32];
    static const uint8_t empty[1] = {0};
    if (constant == NULL && constant_len > 0) return EE_ERR_ARGUMENT;
    if (EVP_Digest(constant != NULL ? constant : empty, constant_len, hash, NULL, EVP_sha256(),
                   NULL) != 1) {
        return EE_ERR_INTERNAL;
    }
    if (pthread_mutex_lock(&table_lock) != 0) return EE_ERR_INTERNAL;
    ee_status status = EE_ERR_QUERY;
    query *q = find_query(query_id);
    /* A query context in use keeps its session alive; one whose session has expired goes with
     * it, so a key never outlives the idle bound. */
    if (q != NULL && use_session(q->session_id) == NULL) q = find_query(query_id);
    if (q != NULL) {
        status = EE_ERR_NOT_AUTHORIZED;
        int granted = 0;
        for (size_t a = 0; a < q->authorization_count && !granted; a++) {
            const authorization *grant = &q->authorizations[a];
            granted = grant->cek_id == cek_id && grant->op == op &&
                      grant->type_code == type_code &&
                      CRYPTO_memcmp(grant->constant_hash, hash, 32) == 0;
        }
        for (size_t k = 0; granted && k < q->key_count; k++) {
            if (q->keys[k].cek_id == cek_id) {
                *out = q->keys[k].keys;
                status = EE_OK;
                break;
            }
        }
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

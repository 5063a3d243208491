/* cell_keys.c: the table of loaded column keys and the key derivation of spec 1.1.
 *
 * A slot holds one root key's derived keys with every precomputation both codecs need. Ids are
 * (generation << 16 | slot + 1), so a freed id stays rejected after its slot is reused. It must
 * never hand out a pointer into the table: callers get a private copy under the lock.
 */
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cell_internal.h"

#define KEY_SLOTS 256

typedef struct slot_state {
    uint64_t generation; /* bumped on every free, never zero for a live slot */
    int live;
} slot_state;

static ee_cell_keys key_table[KEY_SLOTS];
static slot_state slot_states[KEY_SLOTS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

void ee_wipe(void *ptr, size_t len) {
    if (ptr != NULL && len > 0) {
        OPENSSL_cleanse(ptr, len);
    }
}

/* The three labels of spec 1.1, written as ASCII and widened to UTF-16LE at use. */
static const char *const LABELS[3] = {
    "Microsoft SQL Server cell encryption key with encryption algorithm:"
    "AEAD_AES_256_CBC_HMAC_SHA256 and key length:256",
    "Microsoft SQL Server cell MAC key with encryption algorithm:"
    "AEAD_AES_256_CBC_HMAC_SHA256 and key length:256",
    "Microsoft SQL Server cell IV key with encryption algorithm:"
    "AEAD_AES_256_CBC_HMAC_SHA256 and key length:256",
};

/* Writes enc, mac and iv keys (32 bytes each). The CEK is the HMAC key, the label the message. */
static ee_status derive(const uint8_t root_key[32], uint8_t out[96]) {
    uint8_t label[256];
    for (int which = 0; which < 3; which++) {
        size_t n = strlen(LABELS[which]);
        for (size_t i = 0; i < n; i++) {
            label[2 * i] = (uint8_t)LABELS[which][i];
            label[2 * i + 1] = 0;
        }
        unsigned int mac_len = 0;
        if (HMAC(EVP_sha256(), root_key, 32, label, 2 * n, out + 32 * which, &mac_len) == NULL ||
            mac_len != 32) {
            ee_wipe(out, 96);
            return EE_ERR_INTERNAL;
        }
    }
    return EE_OK;
}

ee_status ee_key_derive(uint8_t *out, size_t out_cap, size_t *out_len, const uint8_t *root_key,
                        size_t root_key_len) {
    if (out == NULL || out_len == NULL || root_key == NULL) {
        return EE_ERR_ARGUMENT;
    }
    if (root_key_len != EE_ROOT_KEY_LEN) {
        return EE_ERR_KEY_LENGTH;
    }
    if (out_cap < EE_DERIVED_KEYS_LEN) {
        return EE_ERR_CAPACITY;
    }
    ee_status status = derive(root_key, out);
    *out_len = status == EE_OK ? EE_DERIVED_KEYS_LEN : 0;
    return status;
}

ee_status ee_keys_prepare(ee_cell_keys *out, const uint8_t root_key[32]) {
    uint8_t derived[96];
    memset(out, 0, sizeof *out);
    ee_status status = derive(root_key, derived);
    if (status == EE_OK) {
        memcpy(out->enc_key, derived, 32);
        memcpy(out->mac_key, derived + 32, 32);
        memcpy(out->iv_key, derived + 64, 32);
        ee_portable_prepare(out);
        if (ee_cpu_fast_supported()) {
            ee_fast_prepare(out);
        }
    }
    ee_wipe(derived, sizeof derived);
    return status;
}

static uint64_t make_id(size_t slot, uint64_t generation) {
    return (generation << 16) | (uint64_t)(slot + 1);
}

/* Returns the slot of a live id, or -1. Call with the lock held. */
static long find_slot(uint64_t key_id) {
    uint64_t low = key_id & 0xffffu;
    if (low == 0 || low > KEY_SLOTS) {
        return -1;
    }
    size_t slot = (size_t)(low - 1);
    if (!slot_states[slot].live || make_id(slot, slot_states[slot].generation) != key_id) {
        return -1;
    }
    return (long)slot;
}

ee_status ee_key_load(uint64_t *out_key_id, const uint8_t *root_key, size_t root_key_len) {
    if (out_key_id == NULL || root_key == NULL) {
        return EE_ERR_ARGUMENT;
    }
    if (root_key_len != EE_ROOT_KEY_LEN) {
        return EE_ERR_KEY_LENGTH;
    }
    /* Build the key outside the lock (derivation and schedules take microseconds), then copy. */
    ee_cell_keys fresh;
    ee_status status = ee_keys_prepare(&fresh, root_key);
    if (status != EE_OK) {
        goto done;
    }

    status = EE_ERR_KEY_TABLE_FULL;
    if (pthread_mutex_lock(&table_lock) != 0) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t slot = 0; slot < KEY_SLOTS; slot++) {
        if (!slot_states[slot].live) {
            slot_states[slot].generation += 1;
            /* The generation must fit in the 48 bits above the slot; wrapping to 0 would make an
             * id look like "no generation", so skip 0. */
            slot_states[slot].generation &= 0xffffffffffffull;
            if (slot_states[slot].generation == 0) {
                slot_states[slot].generation = 1;
            }
            slot_states[slot].live = 1;
            key_table[slot] = fresh;
            *out_key_id = make_id(slot, slot_states[slot].generation);
            status = EE_OK;
            break;
        }
    }
    pthread_mutex_unlock(&table_lock);
done:
    ee_wipe(&fresh, sizeof fresh);
    return status;
}

ee_status ee_key_free(uint64_t key_id) {
    if (pthread_mutex_lock(&table_lock) != 0) {
        return EE_ERR_INTERNAL;
    }
    ee_status status = EE_ERR_KEY_ID;
    long slot = find_slot(key_id);
    if (slot >= 0) {
        ee_wipe(&key_table[slot], sizeof key_table[slot]);
        slot_states[slot].live = 0;
        status = EE_OK;
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

ee_status ee_key_snapshot(uint64_t key_id, ee_cell_keys *out) {
    if (pthread_mutex_lock(&table_lock) != 0) {
        return EE_ERR_INTERNAL;
    }
    ee_status status = EE_ERR_KEY_ID;
    long slot = find_slot(key_id);
    if (slot >= 0) {
        *out = key_table[slot];
        status = EE_OK;
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

#ifdef EE_TESTING
const uint8_t *ee_test_key_slot_bytes(size_t slot, size_t *len) {
    *len = sizeof key_table[0];
    return slot < KEY_SLOTS ? (const uint8_t *)&key_table[slot] : NULL;
}

size_t ee_test_key_slot_of(uint64_t key_id) { return (size_t)((key_id & 0xffffu) - 1); }
#endif

/* cell_batch.c: the batch entry points of the cell codec and the choice of implementation.
 *
 * It validates Arrow-style inputs and output capacities, takes a private copy of the key, draws
 * random IVs, and hands whole batches to the portable or fast implementation. It does no
 * cryptography itself and must leave no key material or plaintext behind on any exit path.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "cell_internal.h"

/* 0 until the first use resolves EE_IMPL_AUTO; then EE_IMPL_FAST or EE_IMPL_PORTABLE. */
static _Atomic int32_t active_impl = 0;

static int32_t resolve_auto(void) {
    const char *forced = getenv("ENCLAVESQL_CODEC");
    if (forced != NULL && strcmp(forced, "portable") == 0) {
        return EE_IMPL_PORTABLE;
    }
    return ee_cpu_fast_supported() ? EE_IMPL_FAST : EE_IMPL_PORTABLE;
}

int32_t ee_impl_active(void) {
    int32_t impl = atomic_load(&active_impl);
    if (impl == 0) {
        /* Racing first calls all compute the same answer, so a plain store is enough. */
        impl = resolve_auto();
        atomic_store(&active_impl, impl);
    }
    return impl;
}

ee_status ee_encrypt_rows_any(const ee_cell_keys *keys, const ee_rows *rows, const uint8_t *ivs,
                              uint8_t *out_data, int64_t *out_offsets) {
    if (ee_impl_active() == EE_IMPL_FAST && keys->fast_ready) {
        return ee_fast_encrypt_rows(keys, rows, ivs, out_data, out_offsets);
    }
    return ee_portable_encrypt_rows(keys, rows, ivs, out_data, out_offsets);
}

ee_status ee_decrypt_rows_any(const ee_cell_keys *keys, const ee_rows *rows, uint8_t *out_data,
                              size_t out_data_cap, int64_t *out_offsets, size_t *failed_row) {
    if (ee_impl_active() == EE_IMPL_FAST && keys->fast_ready) {
        return ee_fast_decrypt_rows(keys, rows, out_data, out_data_cap, out_offsets, failed_row);
    }
    return ee_portable_decrypt_rows(keys, rows, out_data, out_data_cap, out_offsets, failed_row);
}

ee_status ee_abi_version(uint32_t *out_version) {
    if (out_version == NULL) {
        return EE_ERR_ARGUMENT;
    }
    *out_version = EE_ABI_VERSION;
    return EE_OK;
}

ee_status ee_cell_select_impl(int32_t impl) {
    switch (impl) {
    case EE_IMPL_AUTO:
        atomic_store(&active_impl, resolve_auto());
        return EE_OK;
    case EE_IMPL_PORTABLE:
        atomic_store(&active_impl, EE_IMPL_PORTABLE);
        return EE_OK;
    case EE_IMPL_FAST:
        if (!ee_cpu_fast_supported()) {
            return EE_ERR_UNSUPPORTED;
        }
        atomic_store(&active_impl, EE_IMPL_FAST);
        return EE_OK;
    default:
        return EE_ERR_ARGUMENT;
    }
}

ee_status ee_cell_current_impl(int32_t *out_impl) {
    if (out_impl == NULL) {
        return EE_ERR_ARGUMENT;
    }
    *out_impl = ee_impl_active();
    return EE_OK;
}

/* A one-byte stand-in for NULL buffers of length zero, so pointer arithmetic stays defined. */
static const uint8_t empty_input[1] = {0};
static uint8_t empty_output[1];

/* Checks the Arrow input: offsets non-decreasing, inside data, validity long enough. Offsets are
 * trusted by nothing downstream until this passes. Counts valid rows and their byte total. */
static ee_status check_rows(const ee_rows *rows, size_t offsets_len, size_t data_len,
                            size_t validity_len, size_t *valid_rows) {
    if (rows->count > (size_t)INT32_MAX || offsets_len != rows->count + 1 ||
        rows->offsets == NULL) {
        return EE_ERR_ARGUMENT;
    }
    if (rows->validity != NULL) {
        size_t bits = rows->validity_bit_offset + rows->count;
        if (bits < rows->count || (bits + 7) / 8 > validity_len) {
            return EE_ERR_ARGUMENT;
        }
    }
    if (rows->offsets[0] < 0) {
        return EE_ERR_ARGUMENT;
    }
    size_t valid = 0;
    for (size_t row = 0; row < rows->count; row++) {
        if (rows->offsets[row + 1] < rows->offsets[row]) {
            return EE_ERR_ARGUMENT;
        }
        valid += (size_t)ee_row_valid(rows, row);
    }
    if ((size_t)rows->offsets[rows->count] > data_len) {
        return EE_ERR_ARGUMENT;
    }
    *valid_rows = valid;
    return EE_OK;
}

/* Output room for the valid rows of a checked input. Encrypting needs a whole cell per
 * plaintext. Decrypting needs at most len - 49 bytes per cell; cells shorter than 49 bytes fail
 * authentication later and need no room. */
static size_t room_for(const ee_rows *rows, int decrypting) {
    size_t room = 0;
    for (size_t row = 0; row < rows->count; row++) {
        if (ee_row_valid(rows, row)) {
            size_t len;
            (void)ee_row_bytes(rows, row, &len);
            if (!decrypting) {
                room += ee_cell_len_for(len);
            } else if (len > EE_CELL_OVERHEAD) {
                room += len - EE_CELL_OVERHEAD;
            }
        }
    }
    return room;
}

/* The checks both batch calls make before they touch a key: the output pointers (a NULL buffer
 * only with no room), the Arrow input (check_rows), and room for count + 1 offsets, in that
 * order. On EE_OK `rows` describes the input, with a stand-in for an empty NULL data buffer. */
static ee_status open_batch(ee_rows *rows, size_t *valid_rows, const uint8_t *out_data,
                            size_t out_data_cap, const size_t *out_data_len,
                            const int64_t *out_offsets, size_t out_offsets_cap,
                            const int32_t *offsets, size_t offsets_len, const uint8_t *data,
                            size_t data_len, const uint8_t *validity, size_t validity_len,
                            size_t validity_bit_offset, size_t count) {
    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        (data == NULL && data_len > 0)) {
        return EE_ERR_ARGUMENT;
    }
    *rows = (ee_rows){offsets, data != NULL ? data : empty_input, validity, validity_bit_offset,
                      count};
    ee_status status = check_rows(rows, offsets_len, data_len, validity_len, valid_rows);
    if (status != EE_OK) {
        return status;
    }
    if (out_offsets_cap < count + 1) {
        return EE_ERR_CAPACITY;
    }
    return EE_OK;
}

ee_status ee_cell_encrypt_batch(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                                int64_t *out_offsets, size_t out_offsets_cap, uint64_t key_id,
                                int32_t mode, const int32_t *offsets, size_t offsets_len,
                                const uint8_t *data, size_t data_len, const uint8_t *validity,
                                size_t validity_len, size_t validity_bit_offset, size_t count,
                                const uint8_t *ivs, size_t ivs_len) {
    ee_cell_keys keys;
    ee_rows rows;
    uint8_t *random_ivs = NULL;
    size_t random_ivs_len = 0;
    size_t valid_rows = 0;
    ee_status status;
    memset(&keys, 0, sizeof keys);

    /* Checked before open_batch so that a bad mode is EE_ERR_ARGUMENT, never EE_ERR_CAPACITY. */
    if (mode != EE_CELL_DETERMINISTIC && mode != EE_CELL_RANDOMIZED && mode != EE_CELL_GIVEN_IV) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    status = open_batch(&rows, &valid_rows, out_data, out_data_cap, out_data_len, out_offsets,
                        out_offsets_cap, offsets, offsets_len, data, data_len, validity,
                        validity_len, validity_bit_offset, count);
    if (status != EE_OK) {
        goto done;
    }
    size_t needed = room_for(&rows, 0);
    if (needed > out_data_cap) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    if (mode == EE_CELL_GIVEN_IV) {
        if (ivs == NULL || valid_rows > SIZE_MAX / 16 || ivs_len != 16 * valid_rows) {
            status = EE_ERR_ARGUMENT;
            goto done;
        }
    } else if (mode == EE_CELL_RANDOMIZED) {
        random_ivs_len = 16 * valid_rows;
        random_ivs = malloc(random_ivs_len > 0 ? random_ivs_len : 1);
        if (random_ivs == NULL) {
            status = EE_ERR_INTERNAL;
            goto done;
        }
        /* RAND_bytes takes an int length; draw in chunks. */
        for (size_t at = 0; at < random_ivs_len; at += 1u << 20) {
            size_t chunk = random_ivs_len - at < (1u << 20) ? random_ivs_len - at : (1u << 20);
            if (RAND_bytes(random_ivs + at, (int)chunk) != 1) {
                status = EE_ERR_RANDOM;
                goto done;
            }
        }
        ivs = random_ivs;
    } else {
        ivs = NULL;
    }
    status = ee_key_snapshot(key_id, &keys);
    if (status != EE_OK) {
        goto done;
    }
    uint8_t *out = out_data != NULL ? out_data : empty_output;
    status = ee_encrypt_rows_any(&keys, &rows, ivs, out, out_offsets);
    if (status == EE_OK) {
        *out_data_len = needed;
    }
done:
    ee_wipe(&keys, sizeof keys);
    if (random_ivs != NULL) {
        ee_wipe(random_ivs, random_ivs_len);
        free(random_ivs);
    }
    return status;
}

ee_status ee_cell_decrypt_batch(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                                int64_t *out_offsets, size_t out_offsets_cap,
                                size_t *out_failed_row, uint64_t key_id, const int32_t *offsets,
                                size_t offsets_len, const uint8_t *data, size_t data_len,
                                const uint8_t *validity, size_t validity_len,
                                size_t validity_bit_offset, size_t count) {
    ee_cell_keys keys;
    ee_rows rows;
    size_t valid_rows = 0;
    size_t failed_row = 0;
    ee_status status;
    memset(&keys, 0, sizeof keys);

    if (out_failed_row == NULL) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    status = open_batch(&rows, &valid_rows, out_data, out_data_cap, out_data_len, out_offsets,
                        out_offsets_cap, offsets, offsets_len, data, data_len, validity,
                        validity_len, validity_bit_offset, count);
    if (status != EE_OK) {
        goto done;
    }
    size_t bound = room_for(&rows, 1);
    if (bound > out_data_cap) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = ee_key_snapshot(key_id, &keys);
    if (status != EE_OK) {
        goto done;
    }
    uint8_t *out = out_data != NULL ? out_data : empty_output;
    size_t out_cap = out_data != NULL ? out_data_cap : 0;
    status = ee_decrypt_rows_any(&keys, &rows, out, out_cap, out_offsets, &failed_row);
    if (status == EE_OK) {
        *out_data_len = (size_t)out_offsets[count];
    } else {
        /* Rows before the bad one were verified, but a failed batch hands out nothing. */
        ee_wipe(out_data, out_data_cap);
        if (status == EE_ERR_AUTH) {
            *out_failed_row = failed_row;
        }
    }
done:
    ee_wipe(&keys, sizeof keys);
    return status;
}

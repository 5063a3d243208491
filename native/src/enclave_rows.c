/* enclave_rows.c: secret memory, the copy-in of host batches, and decrypt/encrypt of values.
 *
 * The host's Arrow buffers are read once, copied into enclave memory and checked there, so a
 * host that rewrites them mid-call cannot make the enclave act on bytes it did not verify.
 * Decrypted values live only in ee_secret_alloc buffers, which are wiped when freed. It must
 * never hand a decrypted value to anything but the operator that asked for it.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "enclave_internal.h"

static _Atomic long secret_outstanding = 0;

void *ee_secret_alloc(size_t len) {
    void *ptr = calloc(len > 0 ? len : 1, 1);
    if (ptr != NULL) atomic_fetch_add(&secret_outstanding, 1);
    return ptr;
}

void ee_secret_free(void *ptr, size_t len) {
    if (ptr == NULL) return;
    ee_wipe(ptr, len > 0 ? len : 1);
    free(ptr);
    atomic_fetch_sub(&secret_outstanding, 1);
}

#ifdef EE_TESTING
long ee_test_secret_outstanding(void) { return atomic_load(&secret_outstanding); }
#endif

ee_status ee_input_check(const ee_input *in) {
    if (in->count > (size_t)INT32_MAX || in->offsets == NULL ||
        in->offsets_len != in->count + 1 || (in->data == NULL && in->data_len > 0)) {
        return EE_ERR_ARGUMENT;
    }
    if (in->validity != NULL) {
        size_t bits = in->bit_offset + in->count;
        if (bits < in->count || (bits + 7) / 8 > in->validity_len) return EE_ERR_ARGUMENT;
    }
    return EE_OK;
}

/* Grows a buffer to at least `need` bytes. Secret buffers are moved through a wiping free. */
static int grow(void *buffer, size_t *cap, size_t need, int secret) {
    void **slot = (void **)buffer;
    if (*slot != NULL && *cap >= need) return 1;
    size_t new_cap = need > 64 ? need : 64;
    void *fresh = secret ? ee_secret_alloc(new_cap) : malloc(new_cap);
    if (fresh == NULL) return 0;
    if (secret) {
        ee_secret_free(*slot, *cap);
    } else {
        free(*slot);
    }
    *slot = fresh;
    *cap = new_cap;
    return 1;
}

void ee_plain_init(ee_plain *plain) { memset(plain, 0, sizeof *plain); }

void ee_plain_free(ee_plain *plain) {
    ee_secret_free(plain->values, plain->values_cap);
    free(plain->cells);
    free(plain->cell_offsets);
    free(plain->bitmap);
    free(plain->valid);
    free(plain->value_offsets);
    ee_plain_init(plain);
}

static const uint8_t no_data[1] = {0};

ee_status ee_plain_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                        const ee_input *in, size_t start, size_t count) {
    ee_status status = EE_OK;
    const uint8_t *data = in->data != NULL ? in->data : no_data;
    plain->count = 0;
    plain->longest = 0;
    if (!grow(&plain->cell_offsets, &plain->cell_offsets_cap, (count + 1) * sizeof(int32_t), 0) ||
        !grow(&plain->value_offsets, &plain->value_offsets_cap, (count + 1) * sizeof(int64_t),
              0) ||
        !grow(&plain->valid, &plain->valid_cap, count + 1, 0) ||
        !grow(&plain->bitmap, &plain->bitmap_cap, count / 8 + 1, 0)) {
        return EE_ERR_INTERNAL;
    }
    /* Pass 1: read each offset and validity bit once, check them, and size the copy. */
    size_t total = 0;
    memset(plain->bitmap, 0, count / 8 + 1);
    for (size_t i = 0; i < count; i++) {
        size_t row = start + i;
        int valid = 1;
        if (in->validity != NULL) {
            size_t bit = in->bit_offset + row;
            valid = (in->validity[bit >> 3] >> (bit & 7)) & 1;
        }
        plain->valid[i] = (uint8_t)valid;
        if (!valid) continue;
        int32_t lo = in->offsets[row], hi = in->offsets[row + 1];
        if (lo < 0 || hi < lo || (size_t)hi > in->data_len) return EE_ERR_ARGUMENT;
        total += (size_t)(hi - lo);
        plain->bitmap[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    if (total > (size_t)INT32_MAX) return EE_ERR_ARGUMENT;
    if (!grow(&plain->cells, &plain->cells_cap, total, 0)) return EE_ERR_INTERNAL;
    /* Pass 2: copy the bytes in. The private offsets come from the lengths we checked, not from
     * a second read of the host's offsets. */
    size_t pos = 0;
    plain->cell_offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        if (plain->valid[i]) {
            size_t row = start + i;
            int32_t lo = in->offsets[row], hi = in->offsets[row + 1];
            size_t len = (lo >= 0 && hi >= lo && (size_t)hi <= in->data_len) ? (size_t)(hi - lo)
                                                                             : 0;
            if (pos + len > total) return EE_ERR_ARGUMENT; /* the host moved an offset */
            if (len > 0) memcpy(plain->cells + pos, data + lo, len);
            pos += len;
        }
        plain->cell_offsets[i + 1] = (int32_t)pos;
    }
    ee_rows rows = {plain->cell_offsets, plain->cells, plain->bitmap, 0, count};
    if (keys != NULL) {
        /* Each valid cell yields at most len - 49 bytes; shorter cells fail authentication. */
        if (!grow(&plain->values, &plain->values_cap, total, 1)) return EE_ERR_INTERNAL;
        size_t failed_row = 0;
        status = ee_decrypt_rows_any(keys, &rows, plain->values, plain->values_cap,
                                     plain->value_offsets, &failed_row);
        if (status != EE_OK) goto fail;
    } else {
        if (!grow(&plain->values, &plain->values_cap, total, 1)) return EE_ERR_INTERNAL;
        if (pos > 0) memcpy(plain->values, plain->cells, pos);
        for (size_t i = 0; i <= count; i++) plain->value_offsets[i] = plain->cell_offsets[i];
    }
    for (size_t i = 0; i < count; i++) {
        if (!plain->valid[i]) continue;
        size_t len;
        const uint8_t *value = ee_plain_value(plain, i, &len);
        if (!ee_value_well_formed(type_code, value, len)) {
            /* A decrypted value of the wrong shape can only come from a cell built under a
             * stolen key: it gets the one authentication status. */
            status = keys != NULL ? EE_ERR_AUTH : EE_ERR_ARGUMENT;
            goto fail;
        }
        if (len > plain->longest) plain->longest = len;
    }
    plain->count = count;
    return EE_OK;
fail:
    ee_wipe(plain->values, plain->values_cap);
    return status;
}

ee_status ee_decrypt_constant(uint8_t **out_value, size_t *out_len, size_t *out_cap,
                              const ee_cell_keys *keys, int32_t type_code, const uint8_t *cell,
                              size_t cell_len) {
    ee_status status;
    int32_t offsets[2] = {0, (int32_t)cell_len};
    int64_t value_offsets[2] = {0, 0};
    size_t failed_row = 0;
    *out_value = NULL;
    *out_len = 0;
    *out_cap = 0;
    if (cell_len > (size_t)INT32_MAX) return EE_ERR_AUTH;
    /* Copy the cell in before verifying it. */
    uint8_t *copy = malloc(cell_len > 0 ? cell_len : 1);
    uint8_t *value = ee_secret_alloc(cell_len);
    if (copy == NULL || value == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    if (cell_len > 0) memcpy(copy, cell, cell_len);
    ee_rows rows = {offsets, copy, NULL, 0, 1};
    status = ee_decrypt_rows_any(keys, &rows, value, cell_len, value_offsets, &failed_row);
    if (status == EE_OK &&
        !ee_value_well_formed(type_code, value, (size_t)value_offsets[1])) {
        status = EE_ERR_AUTH;
    }
    if (status == EE_OK) {
        *out_value = value;
        *out_len = (size_t)value_offsets[1];
        *out_cap = cell_len;
        value = NULL;
    }
done:
    ee_secret_free(value, cell_len);
    free(copy);
    return status;
}

ee_status ee_encrypt_values(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                            int64_t *out_offsets, const ee_cell_keys *keys, int deterministic,
                            const uint8_t *values, const int64_t *value_offsets,
                            const uint8_t *valid, size_t count) {
    ee_status status = EE_OK;
    int32_t *offsets = malloc((count + 1) * sizeof *offsets);
    uint8_t *bitmap = calloc(count / 8 + 1, 1);
    uint8_t *ivs = NULL;
    size_t valid_rows = 0, needed = 0;
    if (offsets == NULL || bitmap == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t i = 0; i <= count; i++) {
        if (value_offsets[i] - value_offsets[0] > INT32_MAX) {
            status = EE_ERR_LIMIT;
            goto done;
        }
        offsets[i] = (int32_t)(value_offsets[i] - value_offsets[0]);
    }
    for (size_t i = 0; i < count; i++) {
        if (!valid[i]) continue;
        bitmap[i >> 3] |= (uint8_t)(1u << (i & 7));
        valid_rows++;
        needed += ee_cell_len_for((size_t)(offsets[i + 1] - offsets[i]));
    }
    if (needed > out_data_cap) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    if (!deterministic) {
        ivs = malloc(16 * valid_rows + 1);
        if (ivs == NULL) {
            status = EE_ERR_INTERNAL;
            goto done;
        }
        for (size_t at = 0; at < 16 * valid_rows; at += 1u << 20) {
            size_t chunk = 16 * valid_rows - at < (1u << 20) ? 16 * valid_rows - at : (1u << 20);
            if (RAND_bytes(ivs + at, (int)chunk) != 1) {
                status = EE_ERR_RANDOM;
                goto done;
            }
        }
    }
    ee_rows rows = {offsets, values + value_offsets[0], bitmap, 0, count};
    uint8_t no_room[1];
    status = ee_encrypt_rows_any(keys, &rows, ivs, out_data != NULL ? out_data : no_room,
                                 out_offsets);
    if (status == EE_OK) *out_data_len = needed;
done:
    free(offsets);
    free(bitmap);
    free(ivs);
    return status;
}

ee_status ee_group_ids_copy(int64_t **out_ids, const int64_t *group_ids, size_t rows,
                            size_t group_count) {
    int64_t *ids = malloc((rows + 1) * sizeof *ids);
    *out_ids = NULL;
    if (ids == NULL) return EE_ERR_INTERNAL;
    if (rows > 0) memcpy(ids, group_ids, rows * sizeof *ids);
    for (size_t r = 0; r < rows; r++) {
        if (ids[r] < -1 || (ids[r] >= 0 && (size_t)ids[r] >= group_count)) {
            free(ids);
            return EE_ERR_ARGUMENT;
        }
    }
    *out_ids = ids;
    return EE_OK;
}

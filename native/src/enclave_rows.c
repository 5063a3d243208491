/* enclave_rows.c: secret memory, the copy-in of host batches, and decrypt/encrypt of values.
 *
 * The host's Arrow buffers or string views are read once, copied into enclave memory and
 * checked there, so a host that rewrites them mid-call cannot make the enclave act on bytes it
 * did not verify. Decrypted values live only in ee_secret_alloc buffers, wiped when freed, or in
 * a resident plain's buffer, wiped by its owner before every return. It must never hand a
 * decrypted value to anything but the operator that asked for it.
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

/* 1 when a validity bitmap (or none) covers bits [bit_offset, bit_offset + count). */
static int validity_fits(const uint8_t *validity, size_t validity_len, size_t bit_offset,
                         size_t count) {
    if (validity == NULL) return 1;
    size_t bits = bit_offset + count;
    return bits >= count && (bits + 7) / 8 <= validity_len;
}

ee_status ee_input_check(const ee_input *in) {
    if (in->count > (size_t)INT32_MAX || in->offsets == NULL ||
        in->offsets_len != in->count + 1 || (in->data == NULL && in->data_len > 0) ||
        !validity_fits(in->validity, in->validity_len, in->bit_offset, in->count)) {
        return EE_ERR_ARGUMENT;
    }
    return EE_OK;
}

/* How a buffer of an ee_plain is allocated: ciphertext and bookkeeping (plain malloc), values
 * of an ordinary plain (counted secret memory), values of a resident plain (calloc, uncounted:
 * it outlives calls, and holds plaintext only between a load and the next scrub). */
enum { BUF_PUBLIC = 0, BUF_SECRET = 1, BUF_RESIDENT = 2 };

static void *buf_alloc(size_t len, int kind) {
    switch (kind) {
    case BUF_SECRET: return ee_secret_alloc(len);
    case BUF_RESIDENT: return calloc(len, 1);
    default: return malloc(len);
    }
}

static void buf_free(void *ptr, size_t cap, int kind) {
    if (kind == BUF_SECRET) {
        ee_secret_free(ptr, cap);
        return;
    }
    if (kind == BUF_RESIDENT && ptr != NULL) ee_wipe(ptr, cap);
    free(ptr);
}

/* Grows a buffer to at least `need` bytes (contents are not kept). Secret buffers are moved
 * through a wiping free. */
static int grow(void *buffer, size_t *cap, size_t need, int kind) {
    void **slot = (void **)buffer;
    if (*slot != NULL && *cap >= need) return 1;
    size_t new_cap = need > 64 ? need : 64;
    void *fresh = buf_alloc(new_cap, kind);
    if (fresh == NULL) return 0;
    buf_free(*slot, *cap, kind);
    *slot = fresh;
    *cap = new_cap;
    return 1;
}

/* Grows the (public) cells buffer keeping its first `keep` bytes, at least doubling. */
static int grow_cells(ee_plain *plain, size_t need, size_t keep) {
    if (plain->cells != NULL && plain->cells_cap >= need) return 1;
    size_t new_cap = plain->cells_cap * 2 > need ? plain->cells_cap * 2 : need;
    if (new_cap < 4096) new_cap = 4096;
    uint8_t *fresh = malloc(new_cap);
    if (fresh == NULL) return 0;
    if (keep > 0) memcpy(fresh, plain->cells, keep);
    free(plain->cells);
    plain->cells = fresh;
    plain->cells_cap = new_cap;
    return 1;
}

static int values_kind(const ee_plain *plain) {
    return plain->resident ? BUF_RESIDENT : BUF_SECRET;
}

void ee_plain_init(ee_plain *plain) { memset(plain, 0, sizeof *plain); }

void ee_plain_init_resident(ee_plain *plain) {
    ee_plain_init(plain);
    plain->resident = 1;
}

void ee_plain_scrub(ee_plain *plain) {
    if (plain->dirty > 0 && plain->values != NULL) {
        ee_wipe(plain->values, plain->dirty < plain->values_cap ? plain->dirty : plain->values_cap);
    }
    plain->dirty = 0;
    plain->count = 0;
    plain->longest = 0;
}

void ee_plain_free(ee_plain *plain) {
    buf_free(plain->values, plain->values_cap, values_kind(plain));
    free(plain->cells);
    free(plain->cell_offsets);
    free(plain->valid);
    free(plain->value_offsets);
    free(plain->live_offsets);
    int resident = plain->resident;
    ee_plain_init(plain);
    plain->resident = resident;
}

/* Room for the per-row bookkeeping of `count` rows (not the cells or the values). */
static int grow_rows(ee_plain *plain, size_t count) {
    return grow(&plain->cell_offsets, &plain->cell_offsets_cap, (count + 1) * sizeof(int32_t),
                BUF_PUBLIC) &&
           grow(&plain->value_offsets, &plain->value_offsets_cap, (count + 1) * sizeof(int64_t),
                BUF_PUBLIC) &&
           grow(&plain->live_offsets, &plain->live_offsets_cap, (count + 1) * sizeof(int64_t),
                BUF_PUBLIC) &&
           grow(&plain->valid, &plain->valid_cap, count + 1, BUF_PUBLIC);
}

static const uint8_t no_data[1] = {0};

/* Copy-in from Arrow buffers: valid[i] for each row, and the bytes of the valid rows packed
 * into cells, cell_offsets[j] .. [j + 1] for the j-th valid row. *live gets the valid rows. */
static ee_status copy_arrow(ee_plain *plain, const ee_input *in, size_t start, size_t count,
                            size_t *live) {
    const uint8_t *data = in->data != NULL ? in->data : no_data;
    /* Pass 1: read each offset and validity bit once, check them, and size the copy. */
    size_t total = 0;
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
    }
    if (total > (size_t)INT32_MAX) return EE_ERR_ARGUMENT;
    if (!grow_cells(plain, total, 0)) return EE_ERR_INTERNAL;
    /* Pass 2: copy the bytes in. The private offsets come from the lengths we checked, not from
     * a second read of the host's offsets. */
    size_t pos = 0, j = 0;
    plain->cell_offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        if (!plain->valid[i]) continue;
        size_t row = start + i;
        int32_t lo = in->offsets[row], hi = in->offsets[row + 1];
        size_t len = (lo >= 0 && hi >= lo && (size_t)hi <= in->data_len) ? (size_t)(hi - lo) : 0;
        if (pos + len > total) return EE_ERR_ARGUMENT; /* the host moved an offset */
        if (len > 0) memcpy(plain->cells + pos, data + lo, len);
        pos += len;
        plain->cell_offsets[++j] = (int32_t)pos;
    }
    *live = j;
    return EE_OK;
}

/* Copy-in from 16-byte string views: each live row's view is read once into a private copy,
 * its length and pointer checked there, and its bytes appended to cells. */
static ee_status copy_views(ee_plain *plain, const uint8_t *views, const uint8_t *live_bits,
                            size_t count, size_t *live) {
    size_t pos = 0, j = 0;
    plain->cell_offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        int valid = (live_bits[i >> 3] >> (i & 7)) & 1;
        plain->valid[i] = (uint8_t)valid;
        if (!valid) continue;
        uint8_t view[EE_VIEW_SIZE];
        memcpy(view, views + i * EE_VIEW_SIZE, EE_VIEW_SIZE);
        uint32_t len;
        memcpy(&len, view, sizeof len);
        const uint8_t *bytes = view + 4;
        if (len > EE_VIEW_INLINE) {
            memcpy(&bytes, view + 8, sizeof bytes);
            if (bytes == NULL) return EE_ERR_ARGUMENT;
        }
        if (len > (size_t)INT32_MAX - pos) return EE_ERR_ARGUMENT;
        if (!grow_cells(plain, pos + len, pos)) return EE_ERR_INTERNAL;
        if (len > 0) memcpy(plain->cells + pos, bytes, len);
        pos += len;
        plain->cell_offsets[++j] = (int32_t)pos;
    }
    *live = j;
    return EE_OK;
}

/* After a copy-in: verifies and decrypts the `live` packed cells (keys != NULL) or takes them
 * as plaintexts, checks each value's shape, and spreads the packed value offsets over the
 * `count` rows (a row that was not loaded gets an empty value). The cells go to the codec
 * packed, with no validity bitmap, so its multi-lane path sees unbroken runs of cells. */
static ee_status finish_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                             size_t count, size_t live) {
    ee_status status = EE_OK;
    size_t total = (size_t)plain->cell_offsets[live];
    int64_t *packed = plain->live_offsets;
    if (!grow(&plain->values, &plain->values_cap, total, values_kind(plain))) {
        return EE_ERR_INTERNAL;
    }
    /* What the codec may write: up to each cell's ciphertext, padding included (a short cell
     * fails, and then everything is wiped). */
    plain->dirty = total > EE_CELL_OVERHEAD * live ? total - EE_CELL_OVERHEAD * live : 0;
    if (keys != NULL) {
        /* Each cell yields at most len - 49 bytes; shorter cells fail authentication. */
        ee_rows rows = {plain->cell_offsets, plain->cells != NULL ? plain->cells : no_data, NULL,
                        0, live};
        size_t failed_row = 0;
        status = ee_decrypt_rows_any(keys, &rows, plain->values, plain->values_cap, packed,
                                     &failed_row);
        if (status != EE_OK) goto fail;
    } else {
        if (total > 0) memcpy(plain->values, plain->cells, total);
        for (size_t j = 0; j <= live; j++) packed[j] = plain->cell_offsets[j];
    }
    size_t longest = 0, fixed = ee_type_fixed_len(type_code);
    for (size_t j = 0; j < live; j++) {
        size_t len = (size_t)(packed[j + 1] - packed[j]);
        if (fixed > 0 ? len != fixed
                      : !ee_value_well_formed(type_code, plain->values + packed[j], len)) {
            /* A decrypted value of the wrong shape can only come from a cell built under a
             * stolen key: it gets the one authentication status. */
            status = keys != NULL ? EE_ERR_AUTH : EE_ERR_ARGUMENT;
            goto fail;
        }
        if (len > longest) longest = len;
    }
    size_t j = 0;
    plain->value_offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        j += plain->valid[i];
        plain->value_offsets[i + 1] = packed[j];
    }
    plain->longest = longest;
    plain->count = count;
    return EE_OK;
fail:
    ee_wipe(plain->values, plain->values_cap);
    plain->dirty = 0;
    return status;
}

ee_status ee_plain_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                        const ee_input *in, size_t start, size_t count) {
    size_t live = 0;
    ee_plain_scrub(plain);
    if (!grow_rows(plain, count)) return EE_ERR_INTERNAL;
    ee_status status = copy_arrow(plain, in, start, count, &live);
    if (status != EE_OK) return status;
    return finish_load(plain, keys, type_code, count, live);
}

ee_status ee_views_check(const uint8_t *views, size_t views_len, const ee_input *in) {
    if (in->count > (size_t)INT32_MAX || (views == NULL && in->count > 0) ||
        views_len / EE_VIEW_SIZE != in->count || views_len % EE_VIEW_SIZE != 0 ||
        !validity_fits(in->validity, in->validity_len, in->bit_offset, in->count)) {
        return EE_ERR_ARGUMENT;
    }
    return EE_OK;
}

ee_status ee_plain_load_views(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                              const uint8_t *views, const uint8_t *live_bits, size_t count) {
    size_t live = 0;
    ee_plain_scrub(plain);
    if (!grow_rows(plain, count)) return EE_ERR_INTERNAL;
    ee_status status = copy_views(plain, views, live_bits, count, &live);
    if (status != EE_OK) return status;
    return finish_load(plain, keys, type_code, count, live);
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

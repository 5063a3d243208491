/* enclave_top_k.c: EE_OP_TOP_K, the operator behind ORDER BY <encrypted column> ... LIMIT k.
 *
 * It decrypts each cell once into wiped scratch memory (chunk by chunk for a small k), keeps the
 * first k rows of the requested order in a bounded heap (O(n log k) comparisons, no full sort)
 * plus the rows tied with the k-th, and ranks only those. It must tell the host nothing about a
 * row outside that selection beyond "not selected", and never return or keep a decrypted value.
 * A long column is split in two halves selected on two threads inside the enclave; the union
 * of their selections holds every row of the answer, and one more pass over that union gives
 * exactly the serial answer, so the host sees nothing of the halves.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "enclave_internal.h"

/* The constant: u64 LE k || u8 direction (0 ascending, 1 descending) || u8 nulls (0 last,
 * 1 first). */
#define TOP_K_CONSTANT_LEN 10

typedef struct ordering {
    int32_t type_code;
    const ee_plain *plain;
    int descending;
} ordering;

/* The value order of rows a and b (-1, 0, 1), ascending whatever the direction. */
static int value_order(const void *ctx, uint32_t a, uint32_t b) {
    const ordering *o = ctx;
    size_t a_len, b_len;
    const uint8_t *va = ee_plain_value(o->plain, a, &a_len);
    const uint8_t *vb = ee_plain_value(o->plain, b, &b_len);
    return ee_value_compare(o->type_code, va, a_len, vb, b_len);
}

/* Positive when row a comes after row b in the requested direction. */
static int comes_after(const void *ctx, uint32_t a, uint32_t b) {
    const ordering *o = ctx;
    int c = value_order(o, a, b);
    return o->descending ? -c : c;
}

/* The heap keeps its last entry (in the requested order) at the root, so a better one
 * replaces it in O(log k). `after` compares two entries, as comes_after does. */
static void sift_up(uint32_t *heap, size_t at, ee_index_cmp after, const void *ctx) {
    while (at > 0) {
        size_t parent = (at - 1) / 2;
        if (after(ctx, heap[at], heap[parent]) <= 0) break;
        uint32_t swap = heap[at];
        heap[at] = heap[parent];
        heap[parent] = swap;
        at = parent;
    }
}

static void sift_down(uint32_t *heap, size_t n, ee_index_cmp after, const void *ctx) {
    size_t at = 0;
    for (;;) {
        size_t left = 2 * at + 1, right = left + 1, last = at;
        if (left < n && after(ctx, heap[left], heap[last]) > 0) last = left;
        if (right < n && after(ctx, heap[right], heap[last]) > 0) last = right;
        if (last == at) return;
        uint32_t swap = heap[at];
        heap[at] = heap[last];
        heap[last] = swap;
        at = last;
    }
}

/* ---- Small k: decrypt chunk by chunk, keep copies of at most k values ----------------------- */

/* Rows per decrypt chunk: the chunk's cells and values stay in cache while they are compared. */
#define TOP_K_CHUNK_ROWS 1024
/* Up to this k the chunked path runs; above it, the whole column is decrypted at once. */
#define TOP_K_SMALL 4096

#ifdef EE_TESTING
size_t ee_test_top_k_small = TOP_K_SMALL; /* tests lower it to reach both paths */
#define SMALL_LIMIT ee_test_top_k_small
#else
#define SMALL_LIMIT TOP_K_SMALL
#endif

/* One heap entry of the chunked path: the row and a copy of its value in secret memory. */
typedef struct kept {
    uint8_t *value;
    size_t len, cap;
    uint32_t row;
} kept;

typedef struct kept_order {
    int32_t type_code;
    const kept *slots;
    int descending;
} kept_order;

static int kept_value_order(const void *ctx, uint32_t a, uint32_t b) {
    const kept_order *o = ctx;
    return ee_value_compare(o->type_code, o->slots[a].value, o->slots[a].len, o->slots[b].value,
                            o->slots[b].len);
}

static int kept_after(const void *ctx, uint32_t a, uint32_t b) {
    const kept_order *o = ctx;
    int c = kept_value_order(ctx, a, b);
    return o->descending ? -c : c;
}

/* Copies a value into a slot, growing the slot's secret buffer through a wiping free. */
static int keep_value(kept *slot, const uint8_t *value, size_t len, uint32_t row) {
    if (slot->value == NULL || slot->cap < len) {
        size_t cap = len > 32 ? len : 32;
        uint8_t *fresh = ee_secret_alloc(cap);
        if (fresh == NULL) return 0;
        ee_secret_free(slot->value, slot->cap);
        slot->value = fresh;
        slot->cap = cap;
    }
    if (len > 0) memcpy(slot->value, value, len);
    slot->len = len;
    slot->row = row;
    return 1;
}

/* The chunked path of ee_enclave_top_k (k <= SMALL_LIMIT): the same answer as the whole-column
 * path below, with O(k) values in memory. NULLs are only known as the chunks arrive, so the heap
 * keeps k values and is cut down to k - nulls at the end when NULLs come first. */
static ee_status top_k_small(int64_t *out, const ee_cell_keys *keys, int32_t type_code,
                             const ee_input *in, size_t k, int descending, int nulls_first) {
    ee_status status = EE_OK;
    size_t count = in->count;
    size_t heap_cap = k < count ? k : count;
    kept *slots = calloc(heap_cap + 1, sizeof *slots);
    uint32_t *heap = malloc((heap_cap + 1) * sizeof *heap);
    uint32_t *tmp = malloc((heap_cap + 1) * sizeof *tmp);
    uint32_t *ties = malloc((count + 1) * sizeof *ties);
    int64_t *slot_rank = malloc((heap_cap + 1) * sizeof *slot_rank);
    uint8_t *displaced = NULL;
    size_t displaced_cap = 0;
    ee_plain plain;
    ee_plain_init(&plain);
    kept_order order = {type_code, slots, descending};
    size_t filled = 0, tie_count = 0, valid_count = 0;
    if (slots == NULL || heap == NULL || tmp == NULL || ties == NULL || slot_rank == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t start = 0; start < count; start += TOP_K_CHUNK_ROWS) {
        size_t n = count - start < TOP_K_CHUNK_ROWS ? count - start : TOP_K_CHUNK_ROWS;
        status = ee_plain_load(&plain, keys, type_code, in, start, n);
        if (status != EE_OK) goto done;
        for (size_t i = 0; i < n; i++) {
            uint32_t row = (uint32_t)(start + i);
            out[row] = plain.valid[i] ? -1 : -3; /* -3: a NULL, settled below */
            if (!plain.valid[i]) continue;
            valid_count++;
            if (heap_cap == 0) continue;
            size_t len;
            const uint8_t *value = ee_plain_value(&plain, i, &len);
            if (filled < heap_cap) {
                if (!keep_value(&slots[filled], value, len, row)) {
                    status = EE_ERR_INTERNAL;
                    goto done;
                }
                heap[filled] = (uint32_t)filled;
                sift_up(heap, filled, kept_after, &order);
                filled++;
                continue;
            }
            const kept *root = &slots[heap[0]];
            int c = ee_value_compare(type_code, value, len, root->value, root->len);
            c = descending ? -c : c;
            if (c > 0) continue;
            if (c == 0) {
                ties[tie_count++] = row;
                continue;
            }
            /* Replace the root, then see whether the displaced value still ties the boundary. */
            if (displaced == NULL || displaced_cap < root->len) {
                ee_secret_free(displaced, displaced_cap);
                displaced_cap = root->len > 32 ? root->len : 32;
                displaced = ee_secret_alloc(displaced_cap);
                if (displaced == NULL) {
                    status = EE_ERR_INTERNAL;
                    goto done;
                }
            }
            size_t displaced_len = root->len;
            uint32_t displaced_row = root->row;
            if (displaced_len > 0) memcpy(displaced, root->value, displaced_len);
            if (!keep_value(&slots[heap[0]], value, len, row)) {
                status = EE_ERR_INTERNAL;
                goto done;
            }
            sift_down(heap, filled, kept_after, &order);
            const kept *boundary = &slots[heap[0]];
            if (ee_value_compare(type_code, displaced, displaced_len, boundary->value,
                                 boundary->len) == 0) {
                ties[tie_count++] = displaced_row;
            } else {
                tie_count = 0;
            }
        }
    }
    size_t null_count = count - valid_count;
    size_t wanted = nulls_first ? (k > null_count ? k - null_count : 0) : k;
    int nulls_selected = nulls_first ? (k > 0 && null_count > 0)
                                     : (k > valid_count && null_count > 0);
    /* NULLs first took places: pop the last values until `wanted` remain, as the replacement
     * above does for the ties. */
    while (filled > wanted) {
        uint32_t popped = heap[0];
        heap[0] = heap[--filled];
        if (filled == 0) {
            tie_count = 0;
            break;
        }
        sift_down(heap, filled, kept_after, &order);
        if (kept_value_order(&order, popped, heap[0]) == 0) {
            ties[tie_count++] = slots[popped].row;
        } else {
            tie_count = 0;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (out[i] == -3) out[i] = nulls_selected ? -2 : -1;
    }
    if (filled > 0) {
        uint32_t boundary = heap[0];
        ee_sort_indexes(heap, tmp, filled, kept_value_order, &order);
        int64_t rank = 0;
        for (size_t s = 0; s < filled; s++) {
            if (s > 0 && kept_value_order(&order, heap[s - 1], heap[s]) != 0) rank++;
            slot_rank[heap[s]] = rank;
            out[slots[heap[s]].row] = rank;
        }
        for (size_t t = 0; t < tie_count; t++) out[ties[t]] = slot_rank[boundary];
    }
done:
    for (size_t s = 0; slots != NULL && s <= heap_cap; s++) {
        ee_secret_free(slots[s].value, slots[s].cap);
    }
    ee_secret_free(displaced, displaced_cap);
    ee_plain_free(&plain);
    if (heap != NULL) ee_wipe(heap, (heap_cap + 1) * sizeof *heap);
    if (tmp != NULL) ee_wipe(tmp, (heap_cap + 1) * sizeof *tmp);
    if (ties != NULL) ee_wipe(ties, (count + 1) * sizeof *ties);
    if (slot_rank != NULL) ee_wipe(slot_rank, (heap_cap + 1) * sizeof *slot_rank);
    free(slots);
    free(heap);
    free(tmp);
    free(ties);
    free(slot_rank);
    return status;
}

/* ---- Two halves on two threads (small k, long columns) ---------------------------------------- */

/* From this many rows on, the chunked path splits the column in two halves. */
#define TOP_K_PARALLEL_MIN 65536

#ifdef EE_TESTING
size_t ee_test_top_k_parallel_min = TOP_K_PARALLEL_MIN; /* tests lower it to reach this path */
#define PARALLEL_MIN ee_test_top_k_parallel_min
#else
#define PARALLEL_MIN TOP_K_PARALLEL_MIN
#endif

typedef struct top_k_half {
    int64_t *out;
    const ee_cell_keys *keys;
    int32_t type_code;
    ee_input in;
    size_t k;
    int descending, nulls_first;
    ee_status status;
} top_k_half;

static void *run_half(void *arg) {
    top_k_half *h = arg;
    h->status = top_k_small(h->out, h->keys, h->type_code, &h->in, h->k, h->descending,
                            h->nulls_first);
    return NULL;
}

/* Rows [start, start + count) of an input, as an input of their own. */
static ee_input sub_input(const ee_input *in, size_t start, size_t count) {
    ee_input sub = *in;
    sub.offsets = in->offsets + start;
    sub.offsets_len = count + 1;
    sub.bit_offset = in->bit_offset + start;
    sub.count = count;
    return sub;
}

static int input_valid(const ee_input *in, size_t row) {
    if (in->validity == NULL) return 1;
    size_t bit = in->bit_offset + row;
    return (in->validity[bit / 8] >> (bit % 8)) & 1;
}

/* The chunked path over two halves at once, then once more over the rows either half selected
 * (a row among the first k of the whole column is among the first k of its half, and every row
 * before it is too). The cells of that union are copied (ciphertext, verified again when the
 * last pass decrypts them). Same answer as top_k_small over the whole input. */
static ee_status top_k_parallel(int64_t *out, const ee_cell_keys *keys, int32_t type_code,
                                const ee_input *in, size_t k, int descending, int nulls_first) {
    size_t count = in->count, middle = count / 2;
    top_k_half halves[2] = {
        {out, keys, type_code, sub_input(in, 0, middle), k, descending, nulls_first, EE_OK},
        {out + middle, keys, type_code, sub_input(in, middle, count - middle), k, descending,
         nulls_first, EE_OK},
    };
    pthread_t thread;
    int threaded = pthread_create(&thread, NULL, run_half, &halves[0]) == 0;
    if (!threaded) run_half(&halves[0]);
    run_half(&halves[1]);
    if (threaded) pthread_join(thread, NULL);
    if (halves[0].status != EE_OK) return halves[0].status;
    if (halves[1].status != EE_OK) return halves[1].status;

    size_t picked = 0, bytes = 0;
    for (size_t i = 0; i < count; i++) {
        if (out[i] == -1) continue;
        picked++;
        if (input_valid(in, i)) bytes += (size_t)(in->offsets[i + 1] - in->offsets[i]);
    }
    ee_status status = EE_OK;
    uint32_t *rows = malloc((picked + 1) * sizeof *rows);
    int32_t *offsets = malloc((picked + 1) * sizeof *offsets);
    uint8_t *data = malloc(bytes + 1);
    uint8_t *validity = calloc(picked / 8 + 1, 1);
    int64_t *union_out = malloc((picked + 1) * sizeof *union_out);
    if (rows == NULL || offsets == NULL || data == NULL || validity == NULL || union_out == NULL ||
        bytes > INT32_MAX) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    size_t at = 0, n = 0;
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        if (out[i] == -1) continue;
        if (input_valid(in, i)) {
            size_t len = (size_t)(in->offsets[i + 1] - in->offsets[i]);
            memcpy(data + at, in->data + in->offsets[i], len);
            at += len;
            validity[n / 8] |= (uint8_t)(1u << (n % 8));
        }
        rows[n++] = (uint32_t)i;
        offsets[n] = (int32_t)at;
    }
    ee_input chosen = {offsets, n + 1, data, at, validity, n / 8 + 1, 0, n};
    status = top_k_small(union_out, keys, type_code, &chosen, k, descending, nulls_first);
    if (status != EE_OK) goto done;
    for (size_t i = 0; i < count; i++) out[i] = -1;
    for (size_t j = 0; j < n; j++) out[rows[j]] = union_out[j];
done:
    if (rows != NULL) ee_wipe(rows, (picked + 1) * sizeof *rows);
    if (union_out != NULL) ee_wipe(union_out, (picked + 1) * sizeof *union_out);
    free(rows);
    free(offsets);
    free(data);
    free(validity);
    free(union_out);
    return status;
}

/* ---- The operator ---------------------------------------------------------------------------- */

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

ee_status ee_enclave_top_k(int64_t *out, size_t out_cap, uint64_t query_id, uint16_t cek_id,
                           int32_t type_code, int32_t op, const uint8_t *constant,
                           size_t constant_len, const int32_t *offsets, size_t offsets_len,
                           const uint8_t *data, size_t data_len, const uint8_t *validity,
                           size_t validity_len, size_t validity_bit_offset, size_t count) {
    ee_status status;
    ee_cell_keys keys;
    uint8_t *blob = NULL;
    uint32_t *heap = NULL, *picked = NULL, *tmp = NULL;
    size_t heap_cap = 0, picked_cap = 0, tmp_cap = 0;
    ee_plain plain;
    ee_plain_init(&plain);
    memset(&keys, 0, sizeof keys);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    if ((out == NULL && out_cap > 0) || op != EE_OP_TOP_K ||
        (constant == NULL && constant_len > 0)) {
        return EE_ERR_ARGUMENT;
    }
    /* Copy the constant in: the bytes hashed for the authorization are the bytes parsed. */
    blob = malloc(constant_len > 0 ? constant_len : 1);
    if (blob == NULL) return EE_ERR_INTERNAL;
    if (constant_len > 0) memcpy(blob, constant, constant_len);
    status = ee_query_key(&keys, query_id, cek_id, op, type_code, blob, constant_len);
    if (status != EE_OK) goto done;
    if (constant_len != TOP_K_CONSTANT_LEN || blob[8] > 1 || blob[9] > 1) {
        status = EE_ERR_ARGUMENT; /* only a broken client authorizes such a constant */
        goto done;
    }
    uint64_t k = get_u64(blob);
    ordering order = {type_code, &plain, blob[8]};
    int nulls_first = blob[9];
    status = ee_input_check(&in);
    if (status != EE_OK) goto done;
    if (out_cap < count) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    if (k <= SMALL_LIMIT) {
        status = count >= PARALLEL_MIN && count >= 4 * k
                     ? top_k_parallel(out, &keys, type_code, &in, (size_t)k, order.descending,
                                      nulls_first)
                     : top_k_small(out, &keys, type_code, &in, (size_t)k, order.descending,
                                   nulls_first);
        goto done;
    }
    status = ee_plain_load(&plain, &keys, type_code, &in, 0, count);
    if (status != EE_OK) goto done;

    size_t valid_count = 0;
    for (size_t i = 0; i < count; i++) valid_count += plain.valid[i];
    uint64_t null_count = count - valid_count;
    /* NULLs tie with each other. Placed first they take the first null_count places, so all of
     * them are selected once k > 0 and the values get what is left of k; placed last they are
     * selected only when the values do not fill k. */
    uint64_t wanted;
    int nulls_selected;
    if (nulls_first) {
        nulls_selected = k > 0 && null_count > 0;
        wanted = k > null_count ? k - null_count : 0;
    } else {
        nulls_selected = k > valid_count && null_count > 0;
        wanted = k;
    }
    size_t heap_len = wanted < valid_count ? (size_t)wanted : valid_count;

    heap_cap = heap_len + 1;
    picked_cap = valid_count + 1;
    heap = malloc(heap_cap * sizeof *heap);
    picked = malloc(picked_cap * sizeof *picked);
    if (heap == NULL || picked == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    /* One pass. Invariant once the heap is full: it holds the heap_len first rows seen so far,
     * its root is the last of them, and picked[0..ties) are the other rows seen that tie with the
     * root (they belong to the answer as long as the root's value stays the boundary). */
    size_t filled = 0, ties = 0;
    for (size_t i = 0; i < count && heap_len > 0; i++) {
        if (!plain.valid[i]) continue;
        uint32_t row = (uint32_t)i;
        if (filled < heap_len) {
            heap[filled] = row;
            sift_up(heap, filled++, comes_after, &order);
            continue;
        }
        int c = comes_after(&order, row, heap[0]);
        if (c > 0) continue;
        if (c == 0) {
            picked[ties++] = row;
            continue;
        }
        uint32_t displaced = heap[0];
        heap[0] = row;
        sift_down(heap, heap_len, comes_after, &order);
        if (comes_after(&order, displaced, heap[0]) == 0) {
            picked[ties++] = displaced; /* still tied with the new boundary */
        } else {
            ties = 0; /* the old boundary's ties now come strictly after it */
        }
    }
    /* The selection: the heap and its ties (disjoint sets of valid rows, so they fit). */
    size_t selected = ties;
    for (size_t h = 0; h < filled; h++) picked[selected++] = heap[h];
    tmp_cap = selected + 1;
    tmp = malloc(tmp_cap * sizeof *tmp);
    if (tmp == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    ee_sort_indexes(picked, tmp, selected, value_order, &order);
    for (size_t i = 0; i < count; i++) out[i] = plain.valid[i] || !nulls_selected ? -1 : -2;
    int64_t rank = 0;
    for (size_t s = 0; s < selected; s++) {
        if (s > 0 && value_order(&order, picked[s - 1], picked[s]) != 0) rank++;
        out[picked[s]] = rank;
    }
    status = EE_OK;
done:
    if (status != EE_OK && out != NULL) memset(out, 0, (out_cap < count ? out_cap : count) * 8);
    ee_wipe(&keys, sizeof keys);
    ee_plain_free(&plain);
    /* The indexes encode order among rows; wipe them as scratch like the values. */
    if (heap != NULL) ee_wipe(heap, heap_cap * sizeof *heap);
    if (picked != NULL) ee_wipe(picked, picked_cap * sizeof *picked);
    if (tmp != NULL) ee_wipe(tmp, tmp_cap * sizeof *tmp);
    free(heap);
    free(picked);
    free(tmp);
    free(blob);
    return status;
}

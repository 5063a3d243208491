/* enclave_ops.c: the batch operators of the enclave (section 5 of enclave.h).
 *
 * Each call copies its constant in, checks the query's authorization for exactly that constant,
 * then copies the cells in chunk by chunk, verifies and decrypts them into wiped scratch memory,
 * and answers with bytes, ranks or fresh ciphertexts. It must never return, log or keep a
 * decrypted value, and never re-emit an input cell's bytes as a result.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "enclave_internal.h"

/* Rows per decrypt chunk: enough to amortize the call, small enough to stay in cache. */
#define CHUNK_ROWS 1024

typedef __int128 i128;
typedef unsigned __int128 u128;

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* A private copy of the host's constant blob: what is hashed for the authorization check is
 * exactly what is parsed afterwards. */
static ee_status copy_constant(uint8_t **out, const uint8_t *constant, size_t constant_len) {
    if (constant == NULL && constant_len > 0) return EE_ERR_ARGUMENT;
    *out = malloc(constant_len > 0 ? constant_len : 1);
    if (*out == NULL) return EE_ERR_INTERNAL;
    if (constant_len > 0) memcpy(*out, constant, constant_len);
    return EE_OK;
}

/* The opening every operator shares: copy the constant in, then take the key of cek_id from the
 * query context, which also checks that (op, type_code, constant) is authorized. On failure the
 * caller's done: path still frees *blob and wipes *keys. */
static ee_status open_operator(ee_cell_keys *keys, uint8_t **blob, uint64_t query_id,
                               uint16_t cek_id, int32_t op, int32_t type_code,
                               const uint8_t *constant, size_t constant_len) {
    ee_status status = copy_constant(blob, constant, constant_len);
    if (status != EE_OK) return status;
    return ee_query_key(keys, query_id, cek_id, op, type_code, *blob, constant_len);
}

/* Scratch for ee_sort_indexes over `count` rows: the index array and its merge buffer, one
 * spare entry each so that an empty input still gets a real allocation. The caller frees both
 * on its done: path, whether or not this succeeds. */
static ee_status alloc_sort_scratch(uint32_t **order, uint32_t **tmp, size_t count) {
    *order = malloc((count + 1) * sizeof **order);
    *tmp = malloc((count + 1) * sizeof **tmp);
    return *order == NULL || *tmp == NULL ? EE_ERR_INTERNAL : EE_OK;
}

/* Checks the input rows, then that the output has room for `need` entries (`cap`). */
static ee_status check_input_room(const ee_input *in, size_t cap, size_t need) {
    ee_status status = ee_input_check(in);
    if (status != EE_OK) return status;
    return cap < need ? EE_ERR_CAPACITY : EE_OK;
}

/* Reads `count` (u32 LE length || cell) items from blob[at..len) into `compact` (the cells
 * without their length prefixes, len bytes of room) and an ee_input over it (offsets has
 * count + 1 entries). 0 unless the items fill the blob exactly. */
static int prefixed_items(const uint8_t *blob, size_t len, size_t at, size_t count,
                          uint8_t *compact, int32_t *offsets, ee_input *items) {
    if (len > (size_t)INT32_MAX || at > len) return 0;
    size_t pos = at, used = 0;
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        if (len - pos < 4) return 0;
        size_t item_len = get_u32(blob + pos);
        pos += 4;
        if (item_len == 0 || len - pos < item_len) return 0;
        memcpy(compact + used, blob + pos, item_len);
        pos += item_len;
        used += item_len;
        offsets[i + 1] = (int32_t)used;
    }
    if (pos != len) return 0;
    *items = (ee_input){offsets, count + 1, compact, used, NULL, 0, 0, count};
    return 1;
}

/* ---- Comparison, BETWEEN, IN, LIKE ----------------------------------------------------------- */

typedef struct value_ref {
    int32_t type_code;
    const ee_plain *plain;
} value_ref;

static int compare_plain_rows(const void *ctx, uint32_t a, uint32_t b) {
    const value_ref *ref = ctx;
    size_t a_len, b_len;
    const uint8_t *va = ee_plain_value(ref->plain, a, &a_len);
    const uint8_t *vb = ee_plain_value(ref->plain, b, &b_len);
    return ee_value_compare(ref->type_code, va, a_len, vb, b_len);
}

/* The signs of a comparison that satisfy `op`, as bits: 1 for below, 2 for equal, 4 for above.
 * holds() then reads a bit instead of branching on the comparison, whose outcome is data: on
 * random strings a branch per row on it was mispredicted half the time, about 8 ns a row. */
static unsigned satisfying_signs(int32_t op) {
    switch (op) {
    case EE_OP_EQ: return 2;
    case EE_OP_NE: return 1 | 4;
    case EE_OP_LT: return 1;
    case EE_OP_LE: return 1 | 2;
    case EE_OP_GT: return 4;
    default: return 2 | 4; /* EE_OP_GE */
    }
}

static uint8_t holds(unsigned signs, int c) {
    int sign = (c > 0) - (c < 0);
    return (uint8_t)((signs >> (sign + 1)) & 1u);
}

/* IN: binary search over the sorted list items. */
static uint8_t in_list(int32_t type_code, const ee_plain *items, const uint32_t *sorted,
                       const uint8_t *value, size_t len) {
    size_t lo = 0, hi = items->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t item_len;
        const uint8_t *item = ee_plain_value(items, sorted[mid], &item_len);
        int c = ee_value_compare(type_code, value, len, item, item_len);
        if (c == 0) return 1;
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return 0;
}

/* The bits of rows [start, start + n) that still need a value: valid in `in` and, when folding,
 * not yet EE_FALSE in `state`. Rows left out are neither copied nor verified. */
static void live_rows(uint8_t *mask, const ee_input *in, const uint8_t *state, size_t start,
                      size_t n) {
    memset(mask, 0, n / 8 + 1);
    for (size_t i = 0; i < n; i++) {
        size_t row = start + i;
        int live = state == NULL || state[row] != EE_FALSE;
        if (live && in->validity != NULL) {
            size_t bit = in->bit_offset + row;
            live = (in->validity[bit >> 3] >> (bit & 7)) & 1;
        }
        if (live) mask[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
}

/* What compare_rows tests each row against: everything it prepared from the constant. */
typedef struct predicate {
    int32_t op;
    int32_t type_code;
    unsigned signs;          /* satisfying_signs(op), for EQ..GE */
    const ee_plain *items;   /* the constant's values; unused for a column pair */
    const uint32_t *sorted;  /* IN: the items in order */
    const uint32_t *pattern; /* LIKE: the compiled pattern */
    size_t pattern_len;
    uint32_t *text;          /* LIKE: room for the code points of the longest value */
    int keyed;               /* EQ..GE, BETWEEN: the type and the constant(s) have order keys */
    i128 lo_key, hi_key;     /* their keys: the comparand (lo_key), or the two bounds */
} predicate;

static int order_i128(i128 a, i128 b) { return (a > b) - (a < b); }

/* EQ..GE and BETWEEN of a keyed type (ee_type_keyed) against a constant, or between two
 * columns: each value's integer order key, compared in a tight loop instead of a call to
 * ee_value_compare per row. A value without a key (a huge DECIMAL) takes the general path. */
static void evaluate_keyed(uint8_t *hit, size_t n, const predicate *p, const ee_plain *left,
                           const ee_plain *right) {
    size_t len, other_len;
    i128 key, other;
    if (right != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i] || !right->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            const uint8_t *with = ee_plain_value(right, i, &other_len);
            int c = ee_value_order_key(p->type_code, value, len, &key) &&
                            ee_value_order_key(p->type_code, with, other_len, &other)
                        ? order_i128(key, other)
                        : ee_value_compare(p->type_code, value, len, with, other_len);
            hit[i] = holds(p->signs, c);
        }
        return;
    }
    const uint8_t *lo = ee_plain_value(p->items, 0, &other_len);
    if (p->op == EE_OP_BETWEEN) {
        size_t hi_len;
        const uint8_t *hi = ee_plain_value(p->items, 1, &hi_len);
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            if (ee_value_order_key(p->type_code, value, len, &key)) {
                hit[i] = (uint8_t)((key >= p->lo_key) & (key <= p->hi_key));
            } else {
                int above_lo = ee_value_compare(p->type_code, value, len, lo, other_len) >= 0;
                int below_hi = ee_value_compare(p->type_code, value, len, hi, hi_len) <= 0;
                hit[i] = (uint8_t)(above_lo & below_hi);
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!left->valid[i]) continue;
        const uint8_t *value = ee_plain_value(left, i, &len);
        int c = ee_value_order_key(p->type_code, value, len, &key)
                    ? order_i128(key, p->lo_key)
                    : ee_value_compare(p->type_code, value, len, lo, other_len);
        hit[i] = holds(p->signs, c);
    }
}

/* hit[i] = 1 when row i of `left` (against row i of `right` for a column pair, else against
 * the constant) satisfies the predicate; 0 for it failing and for rows not loaded. One row loop
 * per operator keeps the operator's dispatch out of the rows. */
static void evaluate_rows(uint8_t *hit, size_t n, const predicate *p, const ee_plain *left,
                          const ee_plain *right) {
    size_t len, c_len, hi_len;
    memset(hit, 0, n);
    if (p->keyed) {
        evaluate_keyed(hit, n, p, left, right);
        return;
    }
    if (right != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i] || !right->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            const uint8_t *other = ee_plain_value(right, i, &c_len);
            hit[i] = holds(p->signs, ee_value_compare(p->type_code, value, len, other, c_len));
        }
        return;
    }
    const uint8_t *c = ee_plain_value(p->items, 0, &c_len);
    switch (p->op) {
    case EE_OP_BETWEEN: {
        const uint8_t *hi = ee_plain_value(p->items, 1, &hi_len);
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            int above_lo = ee_value_compare(p->type_code, value, len, c, c_len) >= 0;
            int below_hi = ee_value_compare(p->type_code, value, len, hi, hi_len) <= 0;
            hit[i] = (uint8_t)(above_lo & below_hi);
        }
        break;
    }
    case EE_OP_IN:
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            hit[i] = in_list(p->type_code, p->items, p->sorted, value, len);
        }
        break;
    case EE_OP_LIKE:
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            size_t text_len = ee_code_points(p->type_code, value, len, p->text);
            hit[i] = (uint8_t)ee_like_match(p->pattern, p->pattern_len, p->text, text_len);
        }
        break;
    default: /* EQ..GE with a constant */
        for (size_t i = 0; i < n; i++) {
            if (!left->valid[i]) continue;
            const uint8_t *value = ee_plain_value(left, i, &len);
            hit[i] = holds(p->signs, ee_value_compare(p->type_code, value, len, c, c_len));
        }
        break;
    }
}

/* compare_rows folds results arithmetically, which needs exactly these three values. */
_Static_assert(EE_FALSE == 0 && EE_TRUE == 1 && EE_NULL == 2, "tri-state values");

/* Eight bytes as one word and back (memcpy: no alignment or aliasing assumptions). */
static uint64_t load8(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

#define BYTES_01 0x0101010101010101ull

/* The fold of one row (see fold_chunk), for byte lanes of a word: valid, right_valid and hit
 * hold 0 or 1 in each byte, before 0, 1 or 2. Multiplying a byte of 0 or 1 by 0xff gives a
 * byte mask without carries between bytes. */
static uint64_t fold_word(uint64_t before, uint64_t valid, uint64_t right_valid, uint64_t hit) {
    uint64_t loaded = (valid & right_valid) * 0xff;
    uint64_t kept = before & (hit * 0xff);
    uint64_t now = (loaded & kept) | (~loaded & (BYTES_01 * EE_NULL));
    uint64_t not_false = ((before | (before >> 1)) & BYTES_01) * 0xff;
    return now & not_false;
}

/* Folds a chunk's results into `result` (fold == 0: into EE_TRUE) without branching on them.
 * With FALSE = 0, TRUE = 1 and NULL = 2: a row already FALSE stays FALSE (it was not loaded,
 * so hit is 0); a row with a NULL cell (valid or right_valid 0) becomes NULL; otherwise FALSE
 * wins and TRUE keeps what was there. Eight rows a word. */
static void fold_chunk(uint8_t *result, int fold, const uint8_t *valid,
                       const uint8_t *right_valid, const uint8_t *hit, size_t n) {
    if (!fold) memset(result, EE_TRUE, n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = fold_word(load8(result + i), load8(valid + i), load8(right_valid + i),
                               load8(hit + i));
        memcpy(result + i, &w, 8);
    }
    for (; i < n; i++) {
        result[i] = (uint8_t)fold_word(result[i], valid[i], right_valid[i], hit[i]);
    }
}

/* 1 when every state byte is EE_FALSE, EE_TRUE or EE_NULL: a byte above 2 has a bit of 0xfc
 * set, or is 3 (bits 0 and 1). Eight bytes a word, no early exit. */
static int states_valid(const uint8_t *state, size_t count) {
    uint64_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        uint64_t w = load8(state + i);
        bad |= (w & (BYTES_01 * 0xfc)) | (w & (w >> 1) & BYTES_01);
    }
    for (; i < count; i++) bad |= state[i] > EE_NULL;
    return bad == 0;
}

/* One column of cells as the host passed it: Arrow buffers, or string views (is_views; then
 * `arrow` gives only the validity bitmap and the count). */
typedef struct column_in {
    ee_input arrow;
    int is_views;
    const uint8_t *views;
    size_t views_len;
} column_in;

static ee_status column_check(const column_in *column) {
    return column->is_views ? ee_views_check(column->views, column->views_len, &column->arrow)
                            : ee_input_check(&column->arrow);
}

/* Loads rows [start, start + n) of a column that still need a value (valid, and not yet
 * EE_FALSE in `state` when folding) into plain; mask is scratch for their bits. */
static ee_status column_load(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                             const column_in *column, const uint8_t *state, size_t start,
                             size_t n, uint8_t *mask, size_t mask_len) {
    live_rows(mask, &column->arrow, state, start, n);
    if (column->is_views) {
        return ee_plain_load_views(plain, keys, type_code, column->views + start * EE_VIEW_SIZE,
                                   mask, n);
    }
    ee_input chunk = {column->arrow.offsets + start, n + 1, column->arrow.data,
                      column->arrow.data_len, mask, mask_len, 0, n};
    return ee_plain_load(plain, keys, type_code, &chunk, 0, n);
}

/* The decrypted rows of compare_rows live in per-thread scratch kept across calls, so a call
 * over a DuckDB vector allocates nothing for them; compare_rows scrubs the plaintext (the bytes
 * each load may have decrypted into, not the whole buffer) on every return. The thread's exit
 * frees it. */
typedef struct compare_scratch {
    ee_plain left, right;
} compare_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ready;

static void scratch_release(void *ptr) {
    compare_scratch *scratch = ptr;
    ee_plain_free(&scratch->left);
    ee_plain_free(&scratch->right);
    free(scratch);
}

static void scratch_key_make(void) {
    scratch_key_ready = pthread_key_create(&scratch_key, scratch_release) == 0;
}

static compare_scratch *thread_scratch(void) {
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_key_ready) return NULL;
    compare_scratch *scratch = pthread_getspecific(scratch_key);
    if (scratch != NULL) return scratch;
    scratch = malloc(sizeof *scratch);
    if (scratch == NULL) return NULL;
    ee_plain_init_resident(&scratch->left);
    ee_plain_init_resident(&scratch->right);
    if (pthread_setspecific(scratch_key, scratch) != 0) {
        free(scratch);
        return NULL;
    }
    return scratch;
}

#ifdef EE_TESTING
size_t ee_test_thread_scratch_residue(void) {
    compare_scratch *scratch = thread_scratch();
    size_t residue = 0;
    if (scratch == NULL) return 0;
    const ee_plain *plains[2] = {&scratch->left, &scratch->right};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < plains[k]->values_cap; i++) residue += plains[k]->values[i] != 0;
    }
    return residue;
}
#endif

/* The constant's order keys, for EQ..GE and BETWEEN of a keyed type (p->keyed stays 0 when a
 * constant has none). */
static void key_constants(predicate *p) {
    p->keyed = 0;
    if (!ee_type_keyed(p->type_code) || p->op > EE_OP_BETWEEN) return;
    if (p->items == NULL) { /* a column pair */
        p->keyed = 1;
        return;
    }
    size_t len;
    const uint8_t *value = ee_plain_value(p->items, 0, &len);
    if (!ee_value_order_key(p->type_code, value, len, &p->lo_key)) return;
    p->hi_key = p->lo_key;
    if (p->op == EE_OP_BETWEEN) {
        value = ee_plain_value(p->items, 1, &len);
        if (!ee_value_order_key(p->type_code, value, len, &p->hi_key)) return;
    }
    p->keyed = 1;
}

/* ee_enclave_compare (fold == 0: out receives each row's result) and ee_enclave_compare_and
 * (fold == 1: out is the running AND, read and written; rows already EE_FALSE are skipped), over
 * Arrow or string-view columns. */
static ee_status compare_rows(uint8_t *out, size_t out_cap, int fold, uint64_t query_id,
                              uint16_t cek_id, int32_t type_code, int32_t op,
                              const uint8_t *constant, size_t constant_len,
                              const column_in *in, const column_in *right_in) {
    ee_status status;
    ee_cell_keys keys;
    uint8_t *blob = NULL, *compact = NULL;
    uint8_t mask[CHUNK_ROWS / 8 + 1], right_mask[CHUNK_ROWS / 8 + 1], hit[CHUNK_ROWS];
    int32_t *item_offsets = NULL;
    uint32_t *sorted = NULL, *tmp = NULL, *pattern = NULL, *text = NULL;
    size_t pattern_cap = 0, text_cap = 0, pattern_len = 0;
    size_t count = in->arrow.count;
    ee_plain items;
    ee_plain_init(&items);
    memset(&keys, 0, sizeof keys);
    compare_scratch *scratch = NULL;

    if ((out == NULL && out_cap > 0) || op < EE_OP_EQ || op > EE_OP_LIKE) {
        return EE_ERR_ARGUMENT;
    }
    if (fold) {
        /* A state byte other than the three results is a host bug; refuse it before any work. */
        if (out_cap < count) return EE_ERR_CAPACITY;
        if (!states_valid(out, count)) return EE_ERR_ARGUMENT;
    }
    status = open_operator(&keys, &blob, query_id, cek_id, op, type_code, constant, constant_len);
    if (status != EE_OK) goto done;
    if (op == EE_OP_LIKE && type_code != EE_TYPE_UTF8 && type_code != EE_TYPE_UTF16LE) {
        status = EE_ERR_TYPE;
        goto done;
    }
    status = column_check(in);
    if (status == EE_OK && out_cap < count) status = EE_ERR_CAPACITY;
    if (status != EE_OK) goto done;
    int column_pair = op <= EE_OP_GE && constant_len == 0;
    if (column_pair) {
        status = column_check(right_in);
        if (status == EE_OK && right_in->arrow.count != count) status = EE_ERR_ARGUMENT;
    } else if (right_in->arrow.offsets != NULL || right_in->views != NULL ||
               right_in->arrow.count != 0) {
        status = EE_ERR_ARGUMENT;
    }
    if (status != EE_OK) goto done;
    scratch = thread_scratch();
    if (scratch == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }

    /* The constant's cells: one comparand, two bounds, the IN list, or the LIKE pattern. */
    if (!column_pair) {
        size_t n = 1, at = 0;
        ee_input item_in;
        if (op == EE_OP_BETWEEN) {
            n = 2;
        } else if (op == EE_OP_IN) {
            n = constant_len >= 4 ? get_u32(blob) : 0;
            at = 4;
            if (n > EE_MAX_IN_ITEMS) {
                status = EE_ERR_LIMIT;
                goto done;
            }
        } else if (op == EE_OP_LIKE) {
            at = 4;
        }
        item_offsets = malloc((n + 1) * sizeof *item_offsets);
        compact = malloc(constant_len + 1);
        if (item_offsets == NULL || compact == NULL) {
            status = EE_ERR_INTERNAL;
            goto done;
        }
        int parsed;
        if (op <= EE_OP_GE) {
            /* A bare cell: one item spanning the whole blob. */
            item_offsets[0] = 0;
            item_offsets[1] = (int32_t)constant_len;
            item_in = (ee_input){item_offsets, 2, blob, constant_len, NULL, 0, 0, 1};
            parsed = constant_len <= (size_t)INT32_MAX;
        } else if (op == EE_OP_LIKE) {
            parsed = constant_len > 4 && constant_len <= (size_t)INT32_MAX;
            item_offsets[0] = 4;
            item_offsets[1] = (int32_t)constant_len;
            item_in = (ee_input){item_offsets, 2, blob, constant_len, NULL, 0, 0, 1};
        } else {
            parsed = n > 0 &&
                     prefixed_items(blob, constant_len, at, n, compact, item_offsets, &item_in);
        }
        if (!parsed) {
            status = EE_ERR_ARGUMENT;
            goto done;
        }
        status = ee_plain_load(&items, &keys, type_code, &item_in, 0, n);
        if (status != EE_OK) goto done;
        if (op == EE_OP_IN) {
            sorted = malloc(n * sizeof *sorted);
            tmp = malloc(n * sizeof *tmp);
            if (sorted == NULL || tmp == NULL) {
                status = EE_ERR_INTERNAL;
                goto done;
            }
            for (size_t i = 0; i < n; i++) sorted[i] = (uint32_t)i;
            value_ref ref = {type_code, &items};
            ee_sort_indexes(sorted, tmp, n, compare_plain_rows, &ref);
        } else if (op == EE_OP_LIKE) {
            size_t len;
            const uint8_t *value = ee_plain_value(&items, 0, &len);
            pattern_cap = (len + 1) * sizeof *pattern;
            pattern = ee_secret_alloc(pattern_cap);
            if (pattern == NULL) {
                status = EE_ERR_INTERNAL;
                goto done;
            }
            pattern_len = ee_code_points(type_code, value, len, pattern);
            if (!ee_like_compile(pattern, &pattern_len, get_u32(blob))) {
                status = EE_ERR_ARGUMENT;
                goto done;
            }
        }
    }
    predicate test = {op, type_code, satisfying_signs(op), column_pair ? NULL : &items, sorted,
                      pattern, pattern_len, NULL, 0, 0, 0};
    key_constants(&test);

    ee_plain *left = &scratch->left, *right = &scratch->right;
    for (size_t start = 0; start < count; start += CHUNK_ROWS) {
        size_t n = count - start < CHUNK_ROWS ? count - start : CHUNK_ROWS;
        const uint8_t *state = fold ? out : NULL;
        /* Only the live rows of the chunk are loaded: its own view of the offsets, with a
         * validity bitmap that also drops rows a previous conjunct made FALSE. */
        status = column_load(left, &keys, type_code, in, state, start, n, mask, sizeof mask);
        if (status == EE_OK && column_pair) {
            status = column_load(right, &keys, type_code, right_in, state, start, n, right_mask,
                                 sizeof right_mask);
        }
        if (status != EE_OK) goto done;
        if (op == EE_OP_LIKE && (left->longest + 1) * sizeof *text > text_cap) {
            ee_secret_free(text, text_cap);
            text_cap = (left->longest + 1) * sizeof *text;
            text = ee_secret_alloc(text_cap);
            if (text == NULL) {
                status = EE_ERR_INTERNAL;
                goto done;
            }
        }
        test.text = text;
        evaluate_rows(hit, n, &test, left, column_pair ? right : NULL);
        fold_chunk(out + start, fold, left->valid, column_pair ? right->valid : left->valid,
                   hit, n);
    }
    status = EE_OK;
done:
    if (status != EE_OK && out != NULL) memset(out, 0, out_cap < count ? out_cap : count);
    if (scratch != NULL) {
        ee_plain_scrub(&scratch->left);
        ee_plain_scrub(&scratch->right);
    }
    ee_wipe(&keys, sizeof keys);
    ee_plain_free(&items);
    ee_secret_free(pattern, pattern_cap);
    ee_secret_free(text, text_cap);
    free(sorted);
    free(tmp);
    free(item_offsets);
    free(compact);
    free(blob);
    return status;
}

static column_in arrow_column(const int32_t *offsets, size_t offsets_len, const uint8_t *data,
                              size_t data_len, const uint8_t *validity, size_t validity_len,
                              size_t validity_bit_offset, size_t count) {
    return (column_in){{offsets, offsets_len, data, data_len, validity, validity_len,
                        validity_bit_offset, count},
                       0, NULL, 0};
}

static column_in view_column(const uint8_t *views, size_t views_len, const uint8_t *validity,
                             size_t validity_len, size_t validity_bit_offset, size_t count) {
    return (column_in){{NULL, 0, NULL, 0, validity, validity_len, validity_bit_offset, count},
                       1, views, views_len};
}

ee_status ee_enclave_compare(uint8_t *out, size_t out_cap, uint64_t query_id, uint16_t cek_id,
                             int32_t type_code, int32_t op, const uint8_t *constant,
                             size_t constant_len, const int32_t *offsets, size_t offsets_len,
                             const uint8_t *data, size_t data_len, const uint8_t *validity,
                             size_t validity_len, size_t validity_bit_offset, size_t count,
                             const int32_t *right_offsets, size_t right_offsets_len,
                             const uint8_t *right_data, size_t right_data_len,
                             const uint8_t *right_validity, size_t right_validity_len,
                             size_t right_validity_bit_offset, size_t right_count) {
    column_in left = arrow_column(offsets, offsets_len, data, data_len, validity, validity_len,
                                  validity_bit_offset, count);
    column_in right = arrow_column(right_offsets, right_offsets_len, right_data, right_data_len,
                                   right_validity, right_validity_len, right_validity_bit_offset,
                                   right_count);
    return compare_rows(out, out_cap, 0, query_id, cek_id, type_code, op, constant, constant_len,
                        &left, &right);
}

ee_status ee_enclave_compare_and(uint8_t *state, size_t state_len, uint64_t query_id,
                                 uint16_t cek_id, int32_t type_code, int32_t op,
                                 const uint8_t *constant, size_t constant_len,
                                 const int32_t *offsets, size_t offsets_len, const uint8_t *data,
                                 size_t data_len, const uint8_t *validity, size_t validity_len,
                                 size_t validity_bit_offset, size_t count,
                                 const int32_t *right_offsets, size_t right_offsets_len,
                                 const uint8_t *right_data, size_t right_data_len,
                                 const uint8_t *right_validity, size_t right_validity_len,
                                 size_t right_validity_bit_offset, size_t right_count) {
    if (state == NULL && count > 0) return EE_ERR_ARGUMENT;
    column_in left = arrow_column(offsets, offsets_len, data, data_len, validity, validity_len,
                                  validity_bit_offset, count);
    column_in right = arrow_column(right_offsets, right_offsets_len, right_data, right_data_len,
                                   right_validity, right_validity_len, right_validity_bit_offset,
                                   right_count);
    return compare_rows(state, state_len, 1, query_id, cek_id, type_code, op, constant,
                        constant_len, &left, &right);
}

ee_status ee_enclave_compare_and_views(
    uint8_t *state, size_t state_len, uint64_t query_id, uint16_t cek_id, int32_t type_code,
    int32_t op, const uint8_t *constant, size_t constant_len, const uint8_t *views,
    size_t views_len, const uint8_t *validity, size_t validity_len, size_t validity_bit_offset,
    size_t count, const uint8_t *right_views, size_t right_views_len,
    const uint8_t *right_validity, size_t right_validity_len, size_t right_validity_bit_offset,
    size_t right_count) {
    if (state == NULL && count > 0) return EE_ERR_ARGUMENT;
    column_in left = view_column(views, views_len, validity, validity_len, validity_bit_offset,
                                 count);
    column_in right = view_column(right_views, right_views_len, right_validity,
                                  right_validity_len, right_validity_bit_offset, right_count);
    return compare_rows(state, state_len, 1, query_id, cek_id, type_code, op, constant,
                        constant_len, &left, &right);
}

ee_status ee_tristate_pack(uint8_t *out_values, size_t out_values_cap, uint8_t *out_validity,
                           size_t out_validity_cap, size_t *out_null_count, const uint8_t *state,
                           size_t count) {
    size_t bytes = (count + 7) / 8;
    if (out_null_count == NULL || (state == NULL && count > 0) ||
        (bytes > 0 && (out_values == NULL || out_validity == NULL))) {
        return EE_ERR_ARGUMENT;
    }
    if (out_values_cap < bytes || out_validity_cap < bytes) return EE_ERR_CAPACITY;
    size_t nulls = 0;
    for (size_t b = 0; b < bytes; b++) {
        uint8_t values = 0, valid = 0;
        size_t end = count - b * 8 < 8 ? count - b * 8 : 8;
        for (size_t k = 0; k < end; k++) {
            uint8_t v = state[b * 8 + k];
            if (v > EE_NULL) return EE_ERR_ARGUMENT;
            values |= (uint8_t)((v == EE_TRUE) << k);
            valid |= (uint8_t)((v != EE_NULL) << k);
            nulls += v == EE_NULL;
        }
        out_values[b] = values;
        out_validity[b] = valid;
    }
    *out_null_count = nulls;
    return EE_OK;
}

/* ---- RANK and GROUP -------------------------------------------------------------------------- */

/* Loads a whole input (one chunk) for the operators that need every value at once. */
static ee_status load_all(ee_plain *plain, const ee_cell_keys *keys, int32_t type_code,
                          const ee_input *in) {
    return ee_plain_load(plain, keys, type_code, in, 0, in->count);
}

ee_status ee_enclave_rank(int64_t *out, size_t out_cap, uint64_t query_id, uint16_t cek_id,
                          int32_t type_code, int32_t op, const uint8_t *constant,
                          size_t constant_len, const int32_t *offsets, size_t offsets_len,
                          const uint8_t *data, size_t data_len, const uint8_t *validity,
                          size_t validity_len, size_t validity_bit_offset, size_t count) {
    ee_status status;
    ee_cell_keys keys;
    uint8_t *blob = NULL;
    uint32_t *order = NULL, *tmp = NULL;
    ee_plain plain;
    ee_plain_init(&plain);
    memset(&keys, 0, sizeof keys);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    if ((out == NULL && out_cap > 0) || (op != EE_OP_RANK && op != EE_OP_GROUP)) {
        return EE_ERR_ARGUMENT;
    }
    status = open_operator(&keys, &blob, query_id, cek_id, op, type_code, constant, constant_len);
    if (status != EE_OK) goto done;
    status = check_input_room(&in, out_cap, count);
    if (status != EE_OK) goto done;
    status = load_all(&plain, &keys, type_code, &in);
    if (status != EE_OK) goto done;
    status = alloc_sort_scratch(&order, &tmp, count);
    if (status != EE_OK) goto done;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        out[i] = -1;
        if (plain.valid[i]) order[n++] = (uint32_t)i;
    }
    value_ref ref = {type_code, &plain};
    ee_sort_indexes(order, tmp, n, compare_plain_rows, &ref);
    int64_t rank = 0;
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && compare_plain_rows(&ref, order[k - 1], order[k]) != 0) rank++;
        out[order[k]] = rank;
    }
    status = EE_OK;
done:
    if (status != EE_OK && out != NULL) memset(out, 0, (out_cap < count ? out_cap : count) * 8);
    ee_wipe(&keys, sizeof keys);
    ee_plain_free(&plain);
    free(order);
    free(tmp);
    free(blob);
    return status;
}

/* ---- Aggregates ------------------------------------------------------------------------------ */

typedef struct group_state {
    i128 sum;
    double float_sum;
    int64_t count;
    int64_t best; /* MIN/MAX: the row holding the best value so far, -1 for none */
} group_state;

static u128 ten_to(int exponent) {
    u128 v = 1;
    for (int i = 0; i < exponent; i++) v *= 10;
    return v;
}

/* A DECIMAL value as a signed 128-bit integer; 0 when |value| >= 10^38, which no DECIMAL(38)
 * can hold. */
static int decimal_value(const uint8_t *value, size_t len, i128 *out) {
    size_t m = len - 1;
    while (m > 0 && value[m] == 0) m--; /* value[1..m] is the magnitude without high zeros */
    if (m > 16) return 0;
    u128 magnitude = 0;
    for (size_t i = m; i >= 1; i--) magnitude = (magnitude << 8) | value[i];
    if (magnitude >= ten_to(38)) return 0;
    *out = value[0] == 1 ? (i128)magnitude : -(i128)magnitude;
    return 1;
}

static int64_t read_i64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return (int64_t)v;
}

static double read_f64(const uint8_t *p, size_t len) {
    uint64_t bits = 0;
    for (size_t i = len; i > 0; i--) bits = (bits << 8) | p[i - 1];
    if (len == 4) {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, 4);
        return (double)f;
    }
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

static void put_le(uint8_t *p, u128 v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_f64(uint8_t *p, double d) {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put_le(p, bits, 8);
}

typedef struct group_ref {
    int32_t type_code;
    const ee_plain *plain;
    const int64_t *group_ids;
} group_ref;

static int compare_group_rows(const void *ctx, uint32_t a, uint32_t b) {
    const group_ref *ref = ctx;
    int64_t ga = ref->group_ids[a], gb = ref->group_ids[b];
    if (ga != gb) return ga < gb ? -1 : 1;
    value_ref values = {ref->type_code, ref->plain};
    return compare_plain_rows(&values, a, b);
}

ee_status ee_enclave_aggregate(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                               int64_t *out_offsets, size_t out_offsets_cap, uint64_t query_id,
                               uint16_t cek_id, int32_t type_code, int32_t op,
                               const uint8_t *constant, size_t constant_len,
                               const int32_t *offsets, size_t offsets_len, const uint8_t *data,
                               size_t data_len, const uint8_t *validity, size_t validity_len,
                               size_t validity_bit_offset, size_t count,
                               const int64_t *group_ids, size_t group_ids_len,
                               size_t group_count, int32_t decimal_scale) {
    ee_status status;
    ee_cell_keys keys;
    uint8_t *blob = NULL, *results = NULL, *result_valid = NULL;
    int64_t *ids = NULL, *result_offsets = NULL;
    uint32_t *order = NULL, *tmp = NULL;
    group_state *groups = NULL;
    size_t results_cap = 0, groups_cap = 0;
    ee_plain plain;
    ee_plain_init(&plain);
    memset(&keys, 0, sizeof keys);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        op < EE_OP_SUM || op > EE_OP_COUNT_DISTINCT) {
        return EE_ERR_ARGUMENT;
    }
    status = open_operator(&keys, &blob, query_id, cek_id, op, type_code, constant, constant_len);
    if (status != EE_OK) goto done;
    int numeric = type_code == EE_TYPE_INT64 || type_code == EE_TYPE_FLOAT32 ||
                  type_code == EE_TYPE_FLOAT64 || type_code == EE_TYPE_DECIMAL;
    if ((op == EE_OP_SUM || op == EE_OP_AVG) && !numeric) {
        status = EE_ERR_TYPE;
        goto done;
    }
    status = ee_input_check(&in);
    if (status == EE_OK &&
        (group_ids == NULL || group_ids_len != count || group_count > (size_t)INT32_MAX ||
         decimal_scale < 0 || decimal_scale > 38)) {
        status = EE_ERR_ARGUMENT;
    }
    if (status != EE_OK) goto done;
    if (out_offsets_cap < group_count + 1) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = ee_group_ids_copy(&ids, group_ids, count, group_count);
    if (status != EE_OK) goto done;
    status = load_all(&plain, &keys, type_code, &in);
    if (status != EE_OK) goto done;

    groups_cap = (group_count + 1) * sizeof *groups;
    groups = ee_secret_alloc(groups_cap);
    size_t result_width = plain.longest > 17 ? plain.longest : 17;
    results_cap = (group_count + 1) * result_width;
    results = ee_secret_alloc(results_cap);
    result_offsets = malloc((group_count + 1) * sizeof *result_offsets);
    result_valid = malloc(group_count + 1);
    if (groups == NULL || results == NULL || result_offsets == NULL || result_valid == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t g = 0; g < group_count; g++) groups[g].best = -1;

    if (op == EE_OP_COUNT_DISTINCT) {
        status = alloc_sort_scratch(&order, &tmp, count);
        if (status != EE_OK) goto done;
        size_t n = 0;
        for (size_t i = 0; i < count; i++) {
            if (plain.valid[i] && ids[i] >= 0) order[n++] = (uint32_t)i;
        }
        group_ref ref = {type_code, &plain, ids};
        ee_sort_indexes(order, tmp, n, compare_group_rows, &ref);
        for (size_t k = 0; k < n; k++) {
            if (k == 0 || compare_group_rows(&ref, order[k - 1], order[k]) != 0) {
                groups[ids[order[k]]].count++;
            }
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            if (!plain.valid[i] || ids[i] < 0) continue;
            group_state *g = &groups[ids[i]];
            size_t len;
            const uint8_t *value = ee_plain_value(&plain, i, &len);
            if (op == EE_OP_MIN || op == EE_OP_MAX) {
                if (g->best >= 0) {
                    size_t best_len;
                    const uint8_t *best = ee_plain_value(&plain, (size_t)g->best, &best_len);
                    int c = ee_value_compare(type_code, value, len, best, best_len);
                    if (op == EE_OP_MIN ? c >= 0 : c <= 0) continue;
                }
                g->best = (int64_t)i;
                g->count++;
                continue;
            }
            g->count++;
            if (type_code == EE_TYPE_FLOAT32 || type_code == EE_TYPE_FLOAT64) {
                g->float_sum += read_f64(value, len);
                continue;
            }
            i128 v;
            if (type_code == EE_TYPE_INT64) {
                v = read_i64(value);
            } else if (!decimal_value(value, len, &v)) {
                status = EE_ERR_OVERFLOW;
                goto done;
            }
            if (__builtin_add_overflow(g->sum, v, &g->sum)) {
                status = EE_ERR_OVERFLOW;
                goto done;
            }
        }
    }

    /* The per-group plaintext results, then one randomized encryption pass. */
    size_t pos = 0;
    for (size_t gi = 0; gi < group_count; gi++) {
        group_state *g = &groups[gi];
        uint8_t *r = results + pos;
        size_t len = 0;
        result_offsets[gi] = (int64_t)pos;
        result_valid[gi] = g->count > 0 || op == EE_OP_COUNT_DISTINCT;
        if (!result_valid[gi]) continue;
        if (op == EE_OP_COUNT_DISTINCT) {
            put_le(r, (u128)(uint64_t)g->count, 8);
            len = 8;
        } else if (op == EE_OP_MIN || op == EE_OP_MAX) {
            const uint8_t *best = ee_plain_value(&plain, (size_t)g->best, &len);
            memcpy(r, best, len);
        } else if (op == EE_OP_AVG) {
            double average;
            if (type_code == EE_TYPE_FLOAT32 || type_code == EE_TYPE_FLOAT64) {
                average = g->float_sum / (double)g->count;
            } else {
                long double scaled = (long double)g->sum / (long double)g->count;
                if (type_code == EE_TYPE_DECIMAL) scaled /= (long double)ten_to(decimal_scale);
                average = (double)scaled;
            }
            put_f64(r, average);
            len = 8;
        } else if (type_code == EE_TYPE_FLOAT32 || type_code == EE_TYPE_FLOAT64) {
            put_f64(r, g->float_sum);
            len = 8;
        } else {
            /* SUM as DECIMAL(38, scale): a result DECIMAL(38) cannot hold is an overflow. */
            u128 magnitude = g->sum < 0 ? (u128)0 - (u128)g->sum : (u128)g->sum;
            if (magnitude >= ten_to(38)) {
                status = EE_ERR_OVERFLOW;
                goto done;
            }
            r[0] = g->sum < 0 ? 0 : 1;
            put_le(r + 1, magnitude, 16);
            len = 17;
        }
        pos += len;
    }
    result_offsets[group_count] = (int64_t)pos;
    status = ee_encrypt_values(out_data, out_data_cap, out_data_len, out_offsets, &keys, 0,
                               results, result_offsets, result_valid, group_count);
done:
    ee_wipe(&keys, sizeof keys);
    ee_plain_free(&plain);
    ee_secret_free(groups, groups_cap);
    ee_secret_free(results, results_cap);
    free(result_offsets);
    free(result_valid);
    free(order);
    free(tmp);
    free(ids);
    free(blob);
    return status;
}

/* ---- REENCRYPT and ENCRYPT ------------------------------------------------------------------- */

ee_status ee_enclave_transform(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                               int64_t *out_offsets, size_t out_offsets_cap, uint64_t query_id,
                               uint16_t cek_id, int32_t type_code, int32_t op,
                               const uint8_t *constant, size_t constant_len,
                               const int32_t *offsets, size_t offsets_len, const uint8_t *data,
                               size_t data_len, const uint8_t *validity, size_t validity_len,
                               size_t validity_bit_offset, size_t count) {
    ee_status status;
    ee_cell_keys keys, target;
    uint8_t *blob = NULL;
    int64_t *chunk_offsets = NULL;
    int deterministic = 0;
    ee_plain plain;
    ee_plain_init(&plain);
    memset(&keys, 0, sizeof keys);
    memset(&target, 0, sizeof target);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        (op != EE_OP_REENCRYPT && op != EE_OP_ENCRYPT)) {
        return EE_ERR_ARGUMENT;
    }
    status = open_operator(&keys, &blob, query_id, cek_id, op, type_code, constant, constant_len);
    if (status != EE_OK) goto done;
    if (op == EE_OP_REENCRYPT) {
        if (constant_len != 3 || (blob[2] != 1 && blob[2] != 2)) {
            status = EE_ERR_ARGUMENT;
            goto done;
        }
        deterministic = blob[2] == 1;
        uint16_t target_id = (uint16_t)(blob[0] | (blob[1] << 8));
        /* The target's own grant names this source and mode; an ENCRYPT grant on the target
         * would also admit host-chosen plaintexts, so it does not count here. */
        const uint8_t source[3] = {(uint8_t)(cek_id & 0xff), (uint8_t)(cek_id >> 8), blob[2]};
        status = ee_query_key(&target, query_id, target_id, EE_OP_REENCRYPT_TARGET, type_code,
                              source, sizeof source);
        if (status != EE_OK) goto done;
    } else {
        if (constant_len > 1 || (constant_len == 1 && blob[0] != 1 && blob[0] != 2)) {
            status = EE_ERR_ARGUMENT;
            goto done;
        }
        deterministic = constant_len == 1 && blob[0] == 1;
        target = keys;
    }
    status = check_input_room(&in, out_offsets_cap, count + 1);
    if (status != EE_OK) goto done;
    chunk_offsets = malloc((CHUNK_ROWS + 1) * sizeof *chunk_offsets);
    if (chunk_offsets == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    size_t pos = 0;
    out_offsets[0] = 0;
    for (size_t start = 0; start < count; start += CHUNK_ROWS) {
        size_t n = count - start < CHUNK_ROWS ? count - start : CHUNK_ROWS;
        status = ee_plain_load(&plain, op == EE_OP_REENCRYPT ? &keys : NULL, type_code, &in,
                               start, n);
        if (status != EE_OK) goto done;
        size_t used = 0;
        /* Every chunk with rows writes at least its offsets; out_data is non-NULL whenever a
         * valid row needs room (the capacity check inside rejects the rest). */
        uint8_t *chunk_out = out_data != NULL ? out_data + pos : NULL;
        status = ee_encrypt_values(chunk_out, out_data_cap - pos, &used, chunk_offsets,
                                   &target, deterministic, plain.values, plain.value_offsets,
                                   plain.valid, n);
        if (status != EE_OK) goto done;
        for (size_t i = 1; i <= n; i++) out_offsets[start + i] = (int64_t)pos + chunk_offsets[i];
        pos += used;
    }
    *out_data_len = pos;
    status = EE_OK;
done:
    ee_wipe(&keys, sizeof keys);
    ee_wipe(&target, sizeof target);
    ee_plain_free(&plain);
    free(chunk_offsets);
    free(blob);
    return status;
}

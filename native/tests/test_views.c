/* test_views.c: C tests of ee_enclave_compare_and_views and the integer order keys of
 * ee_value_order_key, run under ASan and UBSan (and valgrind).
 *
 * Cells come from the independent client of enclave_test_support.h, each in its own exact-size
 * heap block, so that reading past a cell is an ASan error. Expected answers come from the
 * rows' numbers and SQL's three-valued AND, never from the code under test; the Arrow entry
 * point (ee_enclave_compare_and) must agree row for row.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../src/enclave_internal.h"
#include "enclave_test_support.h"

static char platform_dir[64];
static const char *STATEMENT = "SELECT * FROM t WHERE x = ?";
static uint8_t CEK1[32];

/* ---- a column of cells, as string views and as Arrow buffers --------------------------------- */

#define MAX_ROWS 2600
#define LO (-40)
#define HI 40

typedef struct column {
    size_t count;
    uint8_t *cells[MAX_ROWS]; /* NULL for a null row; each its own exact-size block */
    size_t lens[MAX_ROWS];
    uint8_t views[MAX_ROWS * EE_VIEW_SIZE];
    uint8_t validity[MAX_ROWS / 8 + 1];
    int has_nulls;
    int32_t offsets[MAX_ROWS + 1];
    uint8_t *data;
    size_t data_len;
} column;

static void set_view(uint8_t *view, const uint8_t *bytes, uint32_t len) {
    memset(view, 0, EE_VIEW_SIZE);
    memcpy(view, &len, 4);
    if (len <= EE_VIEW_INLINE) {
        if (len > 0) memcpy(view + 4, bytes, len);
    } else {
        memcpy(view + 4, bytes, 4);
        memcpy(view + 8, &bytes, sizeof bytes);
    }
}

/* The plaintext of number v for a type whose order is v's (DECIMAL: a random magnitude
 * length, and zero now and then with a negative sign byte). */
static size_t encode(int32_t type_code, int64_t v, uint8_t *pt) {
    uint64_t u = (uint64_t)(v - LO);
    switch (type_code) {
    case EE_TYPE_INT64:
        for (int i = 0; i < 8; i++) pt[i] = (uint8_t)((uint64_t)v >> (8 * i));
        return 8;
    case EE_TYPE_DATE:
        for (int i = 0; i < 3; i++) pt[i] = (uint8_t)(u >> (8 * i));
        return 3;
    case EE_TYPE_DATETIME2: /* time(5) = u % 5, date(3) = u / 5 */
        for (int i = 0; i < 5; i++) pt[i] = (uint8_t)((u % 5) >> (8 * i));
        for (int i = 0; i < 3; i++) pt[5 + i] = (uint8_t)((u / 5) >> (8 * i));
        return 8;
    case EE_TYPE_DECIMAL: {
        size_t mag_len = 1 + rng_next() % 20;
        uint64_t mag = (uint64_t)(v < 0 ? -v : v);
        pt[0] = v > 0 || (v == 0 && rng_next() % 2) ? 1 : 0;
        memset(pt + 1, 0, mag_len);
        pt[1] = (uint8_t)mag;
        return 1 + mag_len;
    }
    default: { /* FLOAT64 */
        double d = (double)v;
        memcpy(pt, &d, 8);
        return 8;
    }
    }
}

static void column_reset(column *c) {
    for (size_t i = 0; i < c->count; i++) free(c->cells[i]);
    free(c->data);
    memset(c, 0, sizeof *c);
}

/* Appends a row holding `bytes` (NULL: a null row) as a cell of its own. */
static void column_add_bytes(column *c, const uint8_t *bytes, size_t len) {
    size_t row = c->count++;
    c->cells[row] = NULL;
    c->lens[row] = 0;
    if (bytes == NULL) {
        c->has_nulls = 1;
        memset(c->views + row * EE_VIEW_SIZE, 0, EE_VIEW_SIZE);
        return;
    }
    c->validity[row / 8] |= (uint8_t)(1u << (row % 8));
    c->cells[row] = malloc(len > 0 ? len : 1);
    memcpy(c->cells[row], bytes, len);
    c->lens[row] = len;
    set_view(c->views + row * EE_VIEW_SIZE, c->cells[row], (uint32_t)len);
}

static void column_add(column *c, int32_t type_code, const int64_t *v) {
    uint8_t pt[32], cell[128];
    if (v == NULL) {
        column_add_bytes(c, NULL, 0);
        return;
    }
    size_t len = test_cell(CEK1, pt, encode(type_code, *v, pt), cell);
    column_add_bytes(c, cell, len);
}

/* The same rows as Arrow buffers, for ee_enclave_compare_and. */
static void column_arrow(column *c) {
    size_t total = 0;
    for (size_t i = 0; i < c->count; i++) total += c->lens[i];
    free(c->data);
    c->data = malloc(total + 1);
    c->offsets[0] = 0;
    c->data_len = 0;
    for (size_t i = 0; i < c->count; i++) {
        if (c->lens[i] > 0) memcpy(c->data + c->data_len, c->cells[i], c->lens[i]);
        c->data_len += c->lens[i];
        c->offsets[i + 1] = (int32_t)c->data_len;
    }
}

#define VIEWS(c)                                                                               \
    (c)->views, (c)->count * EE_VIEW_SIZE, (c)->has_nulls ? (c)->validity : NULL,              \
        sizeof (c)->validity, (size_t)0, (c)->count
#define ARROW(c)                                                                               \
    (c)->offsets, (c)->count + 1, (c)->data, (c)->data_len,                                    \
        (c)->has_nulls ? (c)->validity : NULL, sizeof (c)->validity, (size_t)0, (c)->count
#define NO_VIEWS NULL, 0, NULL, 0, 0, 0
#define NO_ARROW NULL, 0, NULL, 0, NULL, 0, 0, 0

static uint64_t begin(test_client *c, const test_grant *grants, size_t grant_count) {
    uint64_t query = 0;
    CHECK(test_begin_query(c, STATEMENT, (const uint8_t(*)[32])&CEK1, 1, grants, grant_count,
                           &query) == EE_OK);
    return query;
}

/* u32 LE length || cell, for each of n numbers (BETWEEN's bounds, IN's list). */
static size_t prefixed(int32_t type_code, const int64_t *v, size_t n, int with_count,
                       uint8_t *out) {
    size_t at = 0;
    if (with_count) {
        uint32_t n32 = (uint32_t)n;
        memcpy(out, &n32, 4);
        at = 4;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t pt[32];
        uint32_t len = (uint32_t)test_cell(CEK1, pt, encode(type_code, v[i], pt), out + at + 4);
        memcpy(out + at, &len, 4);
        at += 4 + len;
    }
    return at;
}

/* ---- answers from the rows' numbers ---------------------------------------------------------- */

static int holds(int32_t op, int64_t a, int64_t b) {
    switch (op) {
    case EE_OP_EQ: return a == b;
    case EE_OP_NE: return a != b;
    case EE_OP_LT: return a < b;
    case EE_OP_LE: return a <= b;
    case EE_OP_GT: return a > b;
    default: return a >= b;
    }
}

static uint8_t and3(uint8_t state, int is_null, int hit) {
    if (state == EE_FALSE) return EE_FALSE;
    if (is_null) return EE_NULL;
    if (!hit) return EE_FALSE;
    return state;
}

/* ---- differential runs over every keyed type (and FLOAT64, which has no key) ----------------- */

static void test_types(test_client *client) {
    const int32_t types[] = {EE_TYPE_INT64, EE_TYPE_DATE, EE_TYPE_DATETIME2, EE_TYPE_DECIMAL,
                             EE_TYPE_FLOAT64};
    static column x, y;
    static int64_t xs[MAX_ROWS], ys[MAX_ROWS];
    static uint8_t state[MAX_ROWS], arrow_state[MAX_ROWS], start[MAX_ROWS];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int32_t type = types[t];
        int64_t c = LO + (int64_t)(rng_next() % (HI - LO + 1));
        int64_t bounds[2] = {-10, 15}, list[3] = {-3, 0, 22};
        uint8_t comparand[128], between[300], in_list[400];
        uint8_t pt[32];
        size_t comparand_len = test_cell(CEK1, pt, encode(type, c, pt), comparand);
        size_t between_len = prefixed(type, bounds, 2, 0, between);
        size_t in_len = prefixed(type, list, 3, 1, in_list);
        test_grant grants[16];
        size_t g = 0;
        for (int32_t op = EE_OP_EQ; op <= EE_OP_GE; op++) {
            grants[g++] = (test_grant){1, (uint8_t)op, (uint8_t)type, comparand, comparand_len};
            grants[g++] = (test_grant){1, (uint8_t)op, (uint8_t)type, NULL, 0};
        }
        grants[g++] = (test_grant){1, EE_OP_BETWEEN, (uint8_t)type, between, between_len};
        grants[g++] = (test_grant){1, EE_OP_IN, (uint8_t)type, in_list, in_len};
        uint64_t q = begin(client, grants, g);

        size_t rows = 2500;
        column_reset(&x);
        column_reset(&y);
        for (size_t i = 0; i < rows; i++) {
            xs[i] = LO + (int64_t)(rng_next() % (HI - LO + 1));
            ys[i] = LO + (int64_t)(rng_next() % (HI - LO + 1));
            column_add(&x, type, rng_next() % 10 == 0 ? NULL : &xs[i]);
            column_add(&y, type, rng_next() % 10 == 0 ? NULL : &ys[i]);
            start[i] = (uint8_t)(rng_next() % 3);
        }
        column_arrow(&x);
        column_arrow(&y);
        for (int32_t op = EE_OP_EQ; op <= EE_OP_IN; op++) {
            for (int pair = 0; pair < 2; pair++) {
                if (pair && op > EE_OP_GE) continue;
                const uint8_t *k = op <= EE_OP_GE ? comparand : op == EE_OP_BETWEEN ? between
                                                                                    : in_list;
                size_t k_len = op <= EE_OP_GE ? comparand_len
                                              : op == EE_OP_BETWEEN ? between_len : in_len;
                if (pair) k_len = 0;
                memcpy(state, start, rows);
                memcpy(arrow_state, start, rows);
                if (pair) {
                    CHECK(ee_enclave_compare_and_views(state, rows, q, 1, type, op, NULL, 0,
                                                       VIEWS(&x), VIEWS(&y)) == EE_OK);
                    CHECK(ee_enclave_compare_and(arrow_state, rows, q, 1, type, op, NULL, 0,
                                                 ARROW(&x), ARROW(&y)) == EE_OK);
                } else {
                    CHECK(ee_enclave_compare_and_views(state, rows, q, 1, type, op, k, k_len,
                                                       VIEWS(&x), NO_VIEWS) == EE_OK);
                    CHECK(ee_enclave_compare_and(arrow_state, rows, q, 1, type, op, k, k_len,
                                                 ARROW(&x), NO_ARROW) == EE_OK);
                }
                CHECK(memcmp(state, arrow_state, rows) == 0);
                size_t wrong = 0;
                for (size_t i = 0; i < rows; i++) {
                    int is_null = x.cells[i] == NULL || (pair && y.cells[i] == NULL);
                    int hit;
                    if (pair) {
                        hit = holds(op, xs[i], ys[i]);
                    } else if (op == EE_OP_BETWEEN) {
                        hit = xs[i] >= bounds[0] && xs[i] <= bounds[1];
                    } else if (op == EE_OP_IN) {
                        hit = xs[i] == list[0] || xs[i] == list[1] || xs[i] == list[2];
                    } else {
                        hit = holds(op, xs[i], c);
                    }
                    wrong += state[i] != and3(start[i], is_null, hit);
                }
                if (wrong) fprintf(stderr, "type %d op %d pair %d: %zu wrong\n", type, op, pair,
                                   wrong);
                CHECK(wrong == 0);
                CHECK(ee_test_thread_scratch_residue() == 0);
            }
        }
        /* A state byte that is no result, anywhere in a long state, is refused. */
        const uint8_t bad_bytes[3] = {3, 4, 0x80};
        for (int b = 0; b < 3; b++) {
            memset(state, EE_TRUE, rows);
            state[(size_t)(rng_next() % rows)] = bad_bytes[b];
            CHECK(ee_enclave_compare_and_views(state, rows, q, 1, type, EE_OP_EQ, comparand,
                                               comparand_len, VIEWS(&x), NO_VIEWS) ==
                  EE_ERR_ARGUMENT);
        }
        CHECK(ee_enclave_end_query(q) == EE_OK);
    }
    column_reset(&x);
    column_reset(&y);
}

/* ---- malformed, tampered and skipped views --------------------------------------------------- */

static void test_malformed(test_client *client) {
    uint8_t five[128], pt[32];
    size_t five_len = test_cell(CEK1, pt, encode(EE_TYPE_INT64, 5, pt), five);
    test_grant grants[] = {{1, EE_OP_GE, EE_TYPE_INT64, five, five_len},
                           {1, EE_OP_LT, EE_TYPE_INT64, NULL, 0}};
    uint64_t q = begin(client, grants, 2);
    static column x, y;
    column_reset(&x);
    column_reset(&y);
    int64_t xs[6] = {7, 1, 9, 5, 2, 8};
    for (int i = 0; i < 6; i++) {
        column_add(&x, EE_TYPE_INT64, &xs[i]);
        column_add(&y, EE_TYPE_INT64, &xs[5 - i]);
    }
    uint8_t state[6], good[6] = {1, 0, 1, 1, 0, 1};
    uint8_t saved[EE_VIEW_SIZE];
    size_t residue_failures = 0;
#define RUN(expect)                                                                            \
    do {                                                                                       \
        memset(state, EE_TRUE, 6);                                                             \
        CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five,      \
                                           five_len, VIEWS(&x), NO_VIEWS) == (expect));        \
        residue_failures += ee_test_thread_scratch_residue() != 0;                             \
    } while (0)

    RUN(EE_OK);
    CHECK(memcmp(state, good, 6) == 0);
    /* views_len that is not count * EE_VIEW_SIZE, a NULL views buffer, a short bitmap. */
    memset(state, EE_TRUE, 6);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       x.views, 6 * EE_VIEW_SIZE - 1, NULL, 0, 0,
                                       6, NO_VIEWS) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       x.views, 7 * EE_VIEW_SIZE, NULL, 0, 0, 6,
                                       NO_VIEWS) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       NULL, 6 * EE_VIEW_SIZE, NULL, 0, 0, 6,
                                       NO_VIEWS) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       x.views, 6 * EE_VIEW_SIZE, x.validity, 0, 0, 6,
                                       NO_VIEWS) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       x.views, 6 * EE_VIEW_SIZE, x.validity, 1, 3, 6,
                                       NO_VIEWS) == EE_ERR_ARGUMENT);
    /* Right views where none belong; a column pair of unequal counts. */
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       VIEWS(&x), VIEWS(&y)) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_LT, NULL, 0,
                                       VIEWS(&x), y.views, 5 * EE_VIEW_SIZE, NULL, 0, 0,
                                       5) == EE_ERR_ARGUMENT);
    memset(state, EE_TRUE, 6);
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_LT, NULL, 0,
                                       VIEWS(&x), VIEWS(&y)) == EE_OK);
    uint8_t lt[6] = {0, 1, 0, 0, 1, 0}; /* 7<8, 1<2, 9<5, 5<9, 2<1... as xs vs reversed xs */
    for (int i = 0; i < 6; i++) lt[i] = xs[i] < xs[5 - i];
    CHECK(memcmp(state, lt, 6) == 0);

    /* A pointer view with a NULL pointer: refused when live ... */
    memcpy(saved, x.views + 2 * EE_VIEW_SIZE, EE_VIEW_SIZE);
    memset(x.views + 2 * EE_VIEW_SIZE + 8, 0, 8);
    RUN(EE_ERR_ARGUMENT);
    CHECK(state[0] == 0 && state[3] == 0); /* the state is zeroed on failure */
    /* ... but never read in a row already FALSE, nor in a null row. */
    memset(state, EE_TRUE, 6);
    state[2] = EE_FALSE;
    CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five, five_len,
                                       VIEWS(&x), NO_VIEWS) == EE_OK);
    CHECK(state[0] == 1 && state[1] == 0 && state[2] == 0 && state[3] == 1);
    x.validity[0] = (uint8_t)~(1u << 2);
    x.has_nulls = 1;
    RUN(EE_OK);
    CHECK(state[2] == EE_NULL && state[3] == EE_TRUE);
    x.validity[0] = 0xff;
    x.has_nulls = 0;
    memcpy(x.views + 2 * EE_VIEW_SIZE, saved, EE_VIEW_SIZE);
    RUN(EE_OK);

    /* Truncated and emptied cells fail authentication, inline or by pointer. */
    uint32_t len = (uint32_t)x.lens[3] - 1;
    memcpy(saved, x.views + 3 * EE_VIEW_SIZE, EE_VIEW_SIZE);
    memcpy(x.views + 3 * EE_VIEW_SIZE, &len, 4);
    RUN(EE_ERR_AUTH);
    set_view(x.views + 3 * EE_VIEW_SIZE, x.cells[3], 12);
    RUN(EE_ERR_AUTH);
    set_view(x.views + 3 * EE_VIEW_SIZE, x.cells[3], 0);
    RUN(EE_ERR_AUTH);
    /* A length past INT32_MAX is refused before a byte of it is read (the cell behind the
     * pointer is 65 bytes: ASan would catch a read). */
    len = 0x80000000u;
    memcpy(x.views + 3 * EE_VIEW_SIZE, saved, EE_VIEW_SIZE);
    memcpy(x.views + 3 * EE_VIEW_SIZE, &len, 4);
    RUN(EE_ERR_ARGUMENT);
    memcpy(x.views + 3 * EE_VIEW_SIZE, saved, EE_VIEW_SIZE);
    /* The prefix is ignored: the enclave reads the cell's bytes only through the pointer. */
    x.views[3 * EE_VIEW_SIZE + 4] ^= 0xff;
    RUN(EE_OK);
    CHECK(memcmp(state, good, 6) == 0);
    memcpy(x.views + 3 * EE_VIEW_SIZE, saved, EE_VIEW_SIZE);
    /* A tampered byte fails authentication, and zeroes the state. */
    x.cells[4][60] ^= 1;
    RUN(EE_ERR_AUTH);
    CHECK(state[0] == 0);
    x.cells[4][60] ^= 1;
    RUN(EE_OK);
    CHECK(memcmp(state, good, 6) == 0);
    CHECK(residue_failures == 0);
#undef RUN

    /* Skipped rows are never touched: their views point into a page that cannot be read. */
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *fence = mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(fence != MAP_FAILED);
    if (fence != MAP_FAILED) {
        memcpy(saved, x.views + 1 * EE_VIEW_SIZE, EE_VIEW_SIZE);
        uint32_t fenced = 65; /* a pointer view, built by hand: its prefix cannot be read */
        memset(x.views + 1 * EE_VIEW_SIZE, 0, EE_VIEW_SIZE);
        memcpy(x.views + 1 * EE_VIEW_SIZE, &fenced, 4);
        memcpy(x.views + 1 * EE_VIEW_SIZE + 8, &fence, sizeof fence);
        memset(state, EE_TRUE, 6);
        state[1] = EE_FALSE;
        CHECK(ee_enclave_compare_and_views(state, 6, q, 1, EE_TYPE_INT64, EE_OP_GE, five,
                                           five_len, VIEWS(&x), NO_VIEWS) == EE_OK);
        CHECK(memcmp(state, good, 6) == 0);
        memcpy(x.views + 1 * EE_VIEW_SIZE, saved, EE_VIEW_SIZE);
        munmap(fence, (size_t)page);
    }
    CHECK(ee_enclave_end_query(q) == EE_OK);
    column_reset(&x);
    column_reset(&y);
}

/* ---- a host that rewrites a cell while the enclave works ------------------------------------- */

typedef struct flipper {
    uint8_t *byte;
    atomic_int stop;
} flipper;

static void *flip(void *arg) {
    flipper *f = arg;
    while (!atomic_load(&f->stop)) {
        __atomic_fetch_xor(f->byte, 0x01, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* The enclave verifies and decrypts its own copy of each cell: a cell flipped back and forth
 * during the calls gives the right answer or EE_ERR_AUTH, never a wrong answer from bytes that
 * were not the ones verified. */
static void test_rewritten_cell(test_client *client) {
    uint8_t zero[128], pt[32];
    size_t zero_len = test_cell(CEK1, pt, encode(EE_TYPE_INT64, 0, pt), zero);
    test_grant grants[] = {{1, EE_OP_GE, EE_TYPE_INT64, zero, zero_len}};
    uint64_t q = begin(client, grants, 1);
    static column x;
    column_reset(&x);
    static uint8_t state[MAX_ROWS];
    size_t rows = 2048;
    for (size_t i = 0; i < rows; i++) {
        int64_t v = i % 2 ? 5 : -5;
        column_add(&x, EE_TYPE_INT64, &v);
    }
    /* Flipping a bit of the last ciphertext block of row 1 would, were it decrypted after the
     * MAC check, change the padding or the value; the copy is what is checked. */
    flipper f = {x.cells[1] + x.lens[1] - 20, 0};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, flip, &f) == 0);
    size_t ok = 0, auth = 0, wrong = 0;
    /* Valgrind runs the two threads in turns, slowly: fewer rounds there. */
    int rounds = getenv("EE_TEST_UNDER_VALGRIND") != NULL ? 20 : 200;
    for (int round = 0; round < rounds; round++) {
        memset(state, EE_TRUE, rows);
        ee_status status = ee_enclave_compare_and_views(state, rows, q, 1, EE_TYPE_INT64,
                                                        EE_OP_GE, zero, zero_len, VIEWS(&x),
                                                        NO_VIEWS);
        if (status == EE_OK) {
            ok++;
            for (size_t i = 0; i < rows; i++) wrong += state[i] != (i % 2 ? EE_TRUE : EE_FALSE);
        } else {
            auth += status == EE_ERR_AUTH;
            wrong += status != EE_ERR_AUTH;
        }
    }
    atomic_store(&f.stop, 1);
    pthread_join(thread, NULL);
    printf("rewritten cell: %zu ok, %zu refused\n", ok, auth);
    CHECK(wrong == 0);
    CHECK(ee_test_thread_scratch_residue() == 0);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    column_reset(&x);
}

/* ---- ee_value_order_key agrees with ee_value_compare ----------------------------------------- */

static size_t random_value(int32_t type_code, uint8_t *v) {
    size_t len = ee_type_fixed_len(type_code);
    if (type_code == EE_TYPE_DECIMAL) {
        len = 1 + rng_next() % 21;
        v[0] = (uint8_t)(rng_next() % 2);
    }
    size_t from = type_code == EE_TYPE_DECIMAL ? 1 : 0;
    for (size_t i = from; i < len; i++) {
        /* Mostly small bytes and many zeros, so that equal values and zero magnitudes occur. */
        uint64_t r = rng_next();
        v[i] = r % 3 == 0 ? 0 : r % 3 == 1 ? (uint8_t)(r >> 8) % 3 : (uint8_t)(r >> 16);
    }
    return len;
}

static void test_order_keys(void) {
    const int32_t types[] = {EE_TYPE_INT64,     EE_TYPE_DATE,           EE_TYPE_TIME,
                             EE_TYPE_DATETIME2, EE_TYPE_DATETIMEOFFSET, EE_TYPE_DECIMAL};
    size_t disagree = 0, keyless = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        CHECK(ee_type_keyed(types[t]));
        for (int i = 0; i < 20000; i++) {
            uint8_t a[32], b[32];
            size_t a_len = random_value(types[t], a), b_len = random_value(types[t], b);
            __int128 ka = 0, kb = 0;
            int has_a = ee_value_order_key(types[t], a, a_len, &ka);
            int has_b = ee_value_order_key(types[t], b, b_len, &kb);
            if (!has_a || !has_b) {
                keyless++;
                continue;
            }
            int want = ee_value_compare(types[t], a, a_len, b, b_len);
            disagree += ((ka > kb) - (ka < kb)) != want;
        }
    }
    CHECK(disagree == 0);
    CHECK(keyless > 0); /* the random DECIMALs include magnitudes of 2^127 and above */
    /* Exactly those have no key: 2^127 - 1 has one, 2^127 none; high zero bytes do not count. */
    uint8_t d[20] = {1};
    __int128 key;
    memset(d + 1, 0xff, 15);
    d[16] = 0x7f;
    CHECK(ee_value_order_key(EE_TYPE_DECIMAL, d, 20, &key) && key > 0);
    d[0] = 0;
    CHECK(ee_value_order_key(EE_TYPE_DECIMAL, d, 17, &key) && key < 0);
    d[16] = 0x80;
    CHECK(!ee_value_order_key(EE_TYPE_DECIMAL, d, 17, &key));
    memset(d + 1, 0, 19);
    d[19] = 1;
    CHECK(!ee_value_order_key(EE_TYPE_DECIMAL, d, 20, &key));
    d[19] = 0; /* a negative zero of 19 magnitude bytes is zero */
    CHECK(ee_value_order_key(EE_TYPE_DECIMAL, d, 20, &key) && key == 0);
    CHECK(!ee_type_keyed(EE_TYPE_FLOAT64) && !ee_type_keyed(EE_TYPE_UTF8));
}

int main(void) {
    snprintf(platform_dir, sizeof platform_dir, "/tmp/ee_platform_XXXXXX");
    if (mkdtemp(platform_dir) == NULL) return 1;
    rng_fill(CEK1, 32);
    test_order_keys();
    int32_t impls[2] = {EE_IMPL_PORTABLE, EE_IMPL_FAST};
    for (int i = 0; i < 2; i++) {
        if (ee_cell_select_impl(impls[i]) != EE_OK) continue;
        int before = test_failures;
        test_client c;
        CHECK(test_open(&c, platform_dir) == EE_OK);
        test_types(&c);
        test_malformed(&c);
        test_rewritten_cell(&c);
        CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
        CHECK(ee_test_secret_outstanding() == 0);
        printf("views %s: %s\n", impls[i] == EE_IMPL_FAST ? "fast" : "portable",
               test_failures == before ? "ok" : "FAILED");
    }
    test_remove_platform_dir(platform_dir);
    printf("views: %d failure(s)\n", test_failures);
    return test_failures == 0 ? 0 : 1;
}

/* test_top_k.c: C tests of ee_enclave_top_k (EE_OP_TOP_K), run under ASan and UBSan.
 *
 * Cells and packages come from the independent client of enclave_test_support.h. Expected
 * answers are written out by hand, or (for the random cases) computed by a naive quadratic
 * reference over the test's own plaintext integers, never by the code under test.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "../src/enclave_internal.h"
#include "enclave_test_support.h"

/* The largest k of the chunked path (enclave_top_k.c, EE_TESTING): the tests run both paths. */
extern size_t ee_test_top_k_small;
/* The row count from which the chunked path splits the column over two threads. */
extern size_t ee_test_top_k_parallel_min;

static char platform_dir[64];
static const char *STATEMENT = "SELECT id FROM t ORDER BY x LIMIT ?";
static uint8_t CEK[32];

#define MAX_ROWS 2600
typedef struct cells {
    int32_t offsets[MAX_ROWS + 1];
    uint8_t data[MAX_ROWS * 100];
    uint8_t validity[MAX_ROWS / 8 + 1];
    size_t count, len;
    int has_nulls;
} cells;

static cells col;

static void cells_reset(void) { memset(&col, 0, sizeof col); }

static void cells_add(const void *pt, size_t pt_len) {
    if (pt == NULL) col.has_nulls = 1;
    col.len = test_append_row(col.offsets, col.data, col.len, col.validity, col.count++, CEK, pt,
                              pt_len);
}

static void cells_int(const int64_t *v) {
    uint8_t pt[8];
    for (int i = 0; v != NULL && i < 8; i++) pt[i] = (uint8_t)((uint64_t)*v >> (8 * i));
    cells_add(v ? pt : NULL, 8);
}

#define ROWS                                                                                    \
    col.offsets, col.count + 1, col.data, col.len, col.has_nulls ? col.validity : NULL,         \
        sizeof col.validity, (size_t)0, col.count

static void constant(uint8_t out[10], uint64_t k, int descending, int nulls_first) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(k >> (8 * i));
    out[8] = (uint8_t)descending;
    out[9] = (uint8_t)nulls_first;
}

static uint64_t begin(test_client *c, const test_grant *grants, size_t grant_count) {
    uint64_t query = 0;
    CHECK(test_begin_query(c, STATEMENT, &CEK, 1, grants, grant_count, &query) == EE_OK);
    return query;
}

/* Runs top-k over `col` as INT64 with its own one-grant query; returns the status. */
static ee_status top_k_int(test_client *c, int64_t *out, uint64_t k, int descending,
                           int nulls_first) {
    uint8_t blob[10];
    constant(blob, k, descending, nulls_first);
    test_grant grant = {1, EE_OP_TOP_K, EE_TYPE_INT64, blob, 10};
    uint64_t q = begin(c, &grant, 1);
    ee_status s = ee_enclave_top_k(out, col.count, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, blob, 10,
                                   ROWS);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    return s;
}

static int same(const int64_t *got, const int64_t *want, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "row %zu: got %lld, want %lld\n", i, (long long)got[i],
                    (long long)want[i]);
            return 0;
        }
    }
    return 1;
}

/* Rows 0..7 hold 5, 3, NULL, 3, 9, 1, NULL, 3 (sorted: 1, 3, 3, 3, 5, 9). */
static void load_fixed(void) {
    int64_t v[8] = {5, 3, 0, 3, 9, 1, 0, 3};
    cells_reset();
    for (int i = 0; i < 8; i++) cells_int(i == 2 || i == 6 ? NULL : &v[i]);
}

static void test_hand_cases(test_client *c) {
    int64_t out[8];
    load_fixed();
    /* ASC k=2: 1 and the three 3s tie with the 2nd place; ranks 0 (=1) and 1 (=3). */
    int64_t want_asc2[8] = {-1, 1, -1, 1, -1, 0, -1, 1};
    CHECK(top_k_int(c, out, 2, 0, 0) == EE_OK && same(out, want_asc2, 8));
    /* ASC k=1: only the 1. */
    int64_t want_asc1[8] = {-1, -1, -1, -1, -1, 0, -1, -1};
    CHECK(top_k_int(c, out, 1, 0, 0) == EE_OK && same(out, want_asc1, 8));
    /* ASC k=5: 1, 3, 3, 3, 5 (no tie beyond the 5). */
    int64_t want_asc5[8] = {2, 1, -1, 1, -1, 0, -1, 1};
    CHECK(top_k_int(c, out, 5, 0, 0) == EE_OK && same(out, want_asc5, 8));
    /* DESC k=2: 9, 5; ranks ascend with the value whatever the direction. */
    int64_t want_desc2[8] = {0, -1, -1, -1, 1, -1, -1, -1};
    CHECK(top_k_int(c, out, 2, 1, 0) == EE_OK && same(out, want_desc2, 8));
    /* DESC k=3: 9, 5 and every 3 (tied with the 3rd place). */
    int64_t want_desc3[8] = {1, 0, -1, 0, 2, -1, -1, 0};
    CHECK(top_k_int(c, out, 3, 1, 0) == EE_OK && same(out, want_desc3, 8));
    /* NULLS FIRST k=1 and k=2: the two NULLs tie, no value is needed. */
    int64_t want_nulls[8] = {-1, -1, -2, -1, -1, -1, -2, -1};
    CHECK(top_k_int(c, out, 1, 0, 1) == EE_OK && same(out, want_nulls, 8));
    CHECK(top_k_int(c, out, 2, 1, 1) == EE_OK && same(out, want_nulls, 8));
    /* NULLS FIRST k=3 DESC: both NULLs, then the 9. */
    int64_t want_nf3[8] = {-1, -1, -2, -1, 0, -1, -2, -1};
    CHECK(top_k_int(c, out, 3, 1, 1) == EE_OK && same(out, want_nf3, 8));
    /* NULLS LAST k=7: the six values do not fill 7 places, so the NULLs are selected. */
    int64_t want_all[8] = {2, 1, -2, 1, 3, 0, -2, 1};
    CHECK(top_k_int(c, out, 7, 0, 0) == EE_OK && same(out, want_all, 8));
    /* NULLS LAST k=6: exactly the values. */
    int64_t want_values[8] = {2, 1, -1, 1, 3, 0, -1, 1};
    CHECK(top_k_int(c, out, 6, 0, 0) == EE_OK && same(out, want_values, 8));
    /* k beyond the table (and beyond 2^32) selects everything. */
    CHECK(top_k_int(c, out, UINT64_MAX, 1, 1) == EE_OK && same(out, want_all, 8));
    /* k = 0 selects nothing, NULLs included. */
    int64_t want_none[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    CHECK(top_k_int(c, out, 0, 0, 1) == EE_OK && same(out, want_none, 8));

    /* A column of NULLs only. */
    cells_reset();
    for (int i = 0; i < 3; i++) cells_int(NULL);
    int64_t want_null_all[3] = {-2, -2, -2}, want_null_none[3] = {-1, -1, -1};
    CHECK(top_k_int(c, out, 1, 0, 0) == EE_OK && same(out, want_null_all, 3));
    CHECK(top_k_int(c, out, 0, 0, 0) == EE_OK && same(out, want_null_none, 3));
    /* No rows at all. */
    cells_reset();
    CHECK(top_k_int(c, out, 3, 0, 0) == EE_OK);
}

/* Naive reference: selected iff fewer than k rows come strictly before it in the order; the
 * rank is the number of distinct selected values below it. */
static void reference(const int64_t *v, const int *is_null, size_t n, uint64_t k, int descending,
                      int nulls_first, int64_t *want) {
    for (size_t i = 0; i < n; i++) {
        size_t before = 0;
        for (size_t j = 0; j < n; j++) {
            if (is_null[i]) {
                before += !nulls_first && !is_null[j];
            } else if (is_null[j]) {
                before += nulls_first;
            } else {
                before += descending ? v[j] > v[i] : v[j] < v[i];
            }
        }
        want[i] = before < k ? 0 : -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (want[i] < 0) continue;
        if (is_null[i]) {
            want[i] = -2;
            continue;
        }
        int64_t rank = 0;
        for (size_t j = 0; j < n; j++) {
            if (want[j] < 0 || is_null[j] || v[j] >= v[i]) continue;
            int seen = 0; /* count each smaller selected value once */
            for (size_t m = 0; m < j; m++) {
                seen |= want[m] >= 0 && !is_null[m] && v[m] == v[j];
            }
            rank += !seen;
        }
        want[i] = rank;
    }
}

static void test_random_against_reference(test_client *c) {
    static int64_t v[MAX_ROWS], out[MAX_ROWS], want[MAX_ROWS];
    static int is_null[MAX_ROWS];
    for (int round = 0; round < 60; round++) {
        size_t n = round < 30 ? rng_next() % 40 : 200 + rng_next() % (round < 50 ? 400 : 2400);
        int64_t domain = 1 + (int64_t)(rng_next() % (round % 3 == 0 ? 4 : 1000));
        cells_reset();
        for (size_t i = 0; i < n; i++) {
            is_null[i] = rng_next() % 5 == 0;
            v[i] = (int64_t)(rng_next() % (uint64_t)domain) - domain / 2;
            cells_int(is_null[i] ? NULL : &v[i]);
        }
        uint64_t k = round % 2 || n > 600 ? rng_next() % 12 : rng_next() % (n + 3);
        int descending = (int)(rng_next() & 1), nulls_first = (int)(rng_next() & 1);
        reference(v, is_null, n, k, descending, nulls_first, want);
        CHECK(top_k_int(c, out, k, descending, nulls_first) == EE_OK);
        if (!same(out, want, n)) {
            fprintf(stderr, "round %d: n=%zu k=%llu desc=%d nulls_first=%d\n", round, n,
                    (unsigned long long)k, descending, nulls_first);
            test_failures++;
        }
    }
}

/* The order of other type codes comes from value_order.c; one case each, by hand. */
static void test_type_orders(test_client *c) {
    int64_t out[8];
    uint8_t blob[10];
    /* FLOAT64 DESC k=2: NaN comes last ascending, so first descending; then +inf. -0.0 == 0.0. */
    double floats[5] = {0.0, NAN, INFINITY, -0.0, -1.0};
    cells_reset();
    for (int i = 0; i < 5; i++) cells_add(&floats[i], 8);
    constant(blob, 2, 1, 0);
    test_grant g_float = {1, EE_OP_TOP_K, EE_TYPE_FLOAT64, blob, 10};
    uint64_t q = begin(c, &g_float, 1);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_FLOAT64, EE_OP_TOP_K, blob, 10, ROWS) == EE_OK);
    int64_t want_float[5] = {-1, 1, 0, -1, -1};
    CHECK(same(out, want_float, 5));
    CHECK(ee_enclave_end_query(q) == EE_OK);
    /* ASC k=2: -1.0, then 0.0 and -0.0 tied at the boundary. */
    constant(blob, 2, 0, 0);
    q = begin(c, &g_float, 1);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_FLOAT64, EE_OP_TOP_K, blob, 10, ROWS) == EE_OK);
    int64_t want_zero[5] = {1, -1, -1, 1, 0};
    CHECK(same(out, want_zero, 5));
    CHECK(ee_enclave_end_query(q) == EE_OK);

    /* UTF8 by code point: "Z" < "a" < "é" (C3 A9) < "😀" (F0 9F 98 80). */
    const char *texts[4] = {"\xf0\x9f\x98\x80", "a", "\xc3\xa9", "Z"};
    cells_reset();
    for (int i = 0; i < 4; i++) cells_add(texts[i], strlen(texts[i]));
    constant(blob, 2, 1, 0);
    test_grant g_text = {1, EE_OP_TOP_K, EE_TYPE_UTF8, blob, 10};
    q = begin(c, &g_text, 1);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_UTF8, EE_OP_TOP_K, blob, 10, ROWS) == EE_OK);
    int64_t want_text[4] = {1, -1, 0, -1};
    CHECK(same(out, want_text, 4));
    CHECK(ee_enclave_end_query(q) == EE_OK);

    /* DECIMAL: -5 < 0 (long form) == 0 < 3 < 256; ASC k=2 takes -5 and both zeros. */
    uint8_t d[5][17] = {{1, 0, 1}, {1, 3}, {1, 0}, {0, 5}, {1, 0}};
    size_t d_len[5] = {17, 2, 17, 17, 3};
    cells_reset();
    for (int i = 0; i < 5; i++) cells_add(d[i], d_len[i]);
    constant(blob, 2, 0, 0);
    test_grant g_dec = {1, EE_OP_TOP_K, EE_TYPE_DECIMAL, blob, 10};
    q = begin(c, &g_dec, 1);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_DECIMAL, EE_OP_TOP_K, blob, 10, ROWS) == EE_OK);
    int64_t want_dec[5] = {-1, -1, 1, 0, 1};
    CHECK(same(out, want_dec, 5));
    CHECK(ee_enclave_end_query(q) == EE_OK);

    /* DATE (3-byte LE days): day 70000 > day 5 > day 1; DESC k=1. */
    uint8_t dates[3][3] = {{5, 0, 0}, {0x70, 0x11, 0x01}, {1, 0, 0}};
    cells_reset();
    for (int i = 0; i < 3; i++) cells_add(dates[i], 3);
    constant(blob, 1, 1, 0);
    test_grant g_date = {1, EE_OP_TOP_K, EE_TYPE_DATE, blob, 10};
    q = begin(c, &g_date, 1);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_DATE, EE_OP_TOP_K, blob, 10, ROWS) == EE_OK);
    int64_t want_date[3] = {-1, 0, -1};
    CHECK(same(out, want_date, 3));
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

static void test_refusals(test_client *c) {
    int64_t out[8];
    uint8_t blob[10], other[10], longer[11] = {0};
    load_fixed();
    constant(blob, 3, 0, 0);
    constant(other, 4, 0, 0);
    test_grant grants[2] = {{1, EE_OP_TOP_K, EE_TYPE_INT64, blob, 10},
                            {1, EE_OP_TOP_K, EE_TYPE_INT64, longer, 11}};
    uint64_t q = begin(c, grants, 2);
    /* Another k, another direction, the RANK operator or another type: not authorized. */
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, other, 10, ROWS) ==
          EE_ERR_NOT_AUTHORIZED);
    constant(other, 3, 1, 0);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, other, 10, ROWS) ==
          EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_DATE, EE_OP_TOP_K, blob, 10, ROWS) ==
          EE_ERR_NOT_AUTHORIZED);
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_RANK, blob, 10, ROWS) ==
          EE_ERR_ARGUMENT);
    /* A malformed constant, even authorized, is an argument error. */
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, longer, 11, ROWS) ==
          EE_ERR_ARGUMENT);
    /* Too little room for one answer per row. */
    CHECK(ee_enclave_top_k(out, 7, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, blob, 10, ROWS) ==
          EE_ERR_CAPACITY);
    /* A flipped bit in any cell fails authentication for the whole call. */
    col.data[col.offsets[4] + 40] ^= 1;
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, blob, 10, ROWS) ==
          EE_ERR_AUTH);
    col.data[col.offsets[4] + 40] ^= 1;
    /* A bad offset from the host. */
    col.offsets[3] = 1 << 30;
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, blob, 10, ROWS) ==
          EE_ERR_ARGUMENT);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    /* A query that ended. */
    CHECK(ee_enclave_top_k(out, 8, q, 1, EE_TYPE_INT64, EE_OP_TOP_K, blob, 10, ROWS) ==
          EE_ERR_QUERY);
}

int main(void) {
    snprintf(platform_dir, sizeof platform_dir, "/tmp/ee_top_k_XXXXXX");
    if (mkdtemp(platform_dir) == NULL) return 1;
    rng_fill(CEK, 32);
    test_client c;
    CHECK(test_open(&c, platform_dir) == EE_OK);
    /* The chunked path for every k here, then the same split over two threads from 8 rows
     * on, then the whole-column path. */
    size_t limits[3] = {4096, 4096, 0};
    size_t parallel_from[3] = {(size_t)-1, 8, (size_t)-1};
    const char *names[3] = {"chunked", "chunked on two threads", "whole-column"};
    for (int path = 0; path < 3; path++) {
        ee_test_top_k_small = limits[path];
        ee_test_top_k_parallel_min = parallel_from[path];
        int before = test_failures;
        test_hand_cases(&c);
        test_random_against_reference(&c);
        test_type_orders(&c);
        test_refusals(&c);
        printf("top-k %s path: %s\n", names[path], test_failures == before ? "ok" : "FAILED");
    }
    CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
    CHECK(ee_test_secret_outstanding() == 0);
    test_remove_platform_dir(platform_dir);
    printf("top-k: %d failure(s)\n", test_failures);
    return test_failures == 0 ? 0 : 1;
}

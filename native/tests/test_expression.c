/* test_expression.c: C tests of ee_enclave_aggregate_expression (5b of enclave.h), under ASan
 * and UBSan.
 *
 * Programs, cells and packages are built here by hand and by the independent test client
 * (enclave_test_support.h); every expected answer is worked out by hand in a comment, never
 * computed by the code under test.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "../src/enclave_internal.h"
#include "enclave_test_support.h"

static char platform_dir[64];
static const char *STATEMENT = "SELECT SUM(x * (1 - d)) FROM t";
static uint8_t CEK1[32], CEK2[32];

/* ---- inputs: one slot-major Arrow binary array ------------------------------------------------ */

#define MAX_ENTRIES 64
typedef struct entries {
    int32_t offsets[MAX_ENTRIES + 1];
    uint8_t data[MAX_ENTRIES * 96];
    uint8_t validity[MAX_ENTRIES / 8 + 1];
    size_t count;
    size_t len;
} entries;

/* A cell of value under cek, value's bytes when cek is NULL, or a null entry when value is NULL. */
static void entry_add(entries *e, const uint8_t *cek, const void *value, size_t len) {
    e->len = test_append_row(e->offsets, e->data, e->len, e->validity, e->count++, cek, value, len);
}

/* A DECIMAL plaintext: sign byte (1 non-negative) and a 16-byte LE magnitude. */
static void entry_decimal(entries *e, const uint8_t *cek, int64_t unscaled) {
    uint8_t v[17] = {unscaled < 0 ? 0 : 1};
    uint64_t magnitude = unscaled < 0 ? (uint64_t)0 - (uint64_t)unscaled : (uint64_t)unscaled;
    for (int i = 0; i < 8; i++) v[1 + i] = (uint8_t)(magnitude >> (8 * i));
    entry_add(e, cek, v, 17);
}

static void entry_int(entries *e, const uint8_t *cek, int64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)v >> (8 * i));
    entry_add(e, cek, b, 8);
}

static void entry_double(entries *e, const uint8_t *cek, double d) {
    uint8_t b[8];
    memcpy(b, &d, 8);
    entry_add(e, cek, b, 8);
}

#define ENTRIES(e)                                                                              \
    (e)->offsets, (e)->count + 1, (e)->data, (e)->len, (e)->validity, sizeof (e)->validity,    \
        (size_t)0, (e)->count

/* ---- programs --------------------------------------------------------------------------------- */

typedef struct program {
    uint8_t bytes[512];
    size_t len;
    size_t code_at;
} program;

static void program_begin(program *p, size_t slot_count) {
    p->bytes[0] = 1;
    p->bytes[1] = (uint8_t)slot_count;
    p->len = 2;
}

static void program_slot(program *p, uint8_t source, uint16_t cek_id, uint8_t type_code,
                         uint8_t scale) {
    uint8_t *s = p->bytes + p->len;
    s[0] = source;
    s[1] = (uint8_t)cek_id;
    s[2] = (uint8_t)(cek_id >> 8);
    s[3] = type_code;
    s[4] = scale;
    p->len += 5;
}

static void program_code(program *p, const uint8_t *code, size_t code_len) {
    p->bytes[p->len] = (uint8_t)code_len;
    p->bytes[p->len + 1] = (uint8_t)(code_len >> 8);
    memcpy(p->bytes + p->len + 2, code, code_len);
    p->len += 2 + code_len;
}

/* An exact literal instruction: 0x02, scale, sign, 16-byte LE magnitude (at most 8 used). */
static size_t literal(uint8_t *at, uint8_t scale, int64_t unscaled) {
    memset(at, 0, 19);
    at[0] = 2;
    at[1] = scale;
    at[2] = unscaled < 0 ? 0 : 1;
    uint64_t magnitude = unscaled < 0 ? (uint64_t)0 - (uint64_t)unscaled : (uint64_t)unscaled;
    for (int i = 0; i < 8; i++) at[3 + i] = (uint8_t)(magnitude >> (8 * i));
    return 19;
}

/* ---- the query context -------------------------------------------------------------------------- */

static uint64_t begin(test_client *c, const test_grant *grants, size_t grant_count) {
    uint8_t ceks[2][32];
    memcpy(ceks[0], CEK1, 32);
    memcpy(ceks[1], CEK2, 32);
    uint64_t query = 0;
    CHECK(test_begin_query(c, STATEMENT, ceks, 2, grants, grant_count, &query) == EE_OK);
    return query;
}

/* Decrypts result cells under CEK1 with the codec (a separately tested component). */
static void decrypt_results(const uint8_t *data, size_t data_len, const int64_t *offsets,
                            size_t count, uint8_t *plain, int64_t *plain_offsets) {
    int32_t offsets32[8];
    uint8_t validity[1] = {0};
    for (size_t i = 0; i <= count; i++) offsets32[i] = (int32_t)offsets[i];
    for (size_t i = 0; i < count; i++) {
        if (offsets[i + 1] > offsets[i]) validity[0] |= (uint8_t)(1u << i);
    }
    uint64_t key = 0;
    size_t out_len = 0, failed = 0;
    CHECK(ee_key_load(&key, CEK1, 32) == EE_OK);
    CHECK(ee_cell_decrypt_batch(plain, 1024, &out_len, plain_offsets, count + 1, &failed, key,
                                offsets32, count + 1, data, data_len, validity, 1, 0,
                                count) == EE_OK);
    CHECK(ee_key_free(key) == EE_OK);
}

static ee_status run(uint64_t q, uint16_t cek_id, int32_t type_code, int32_t op,
                     const program *p, const entries *e, const int64_t *groups, size_t rows,
                     size_t group_count, uint8_t *out, int64_t *offsets, size_t *out_len) {
    return ee_enclave_aggregate_expression(out, 1024, out_len, offsets, 8, q, cek_id, type_code,
                                           op, p->bytes, p->len, ENTRIES(e), groups, rows,
                                           group_count);
}

/* SUM(x * (1 - d)), x DECIMAL(15,2) under CEK1, d DECIMAL(15,2) plaintext. */
static void test_decimal_sum_and_avg(test_client *c) {
    program p;
    program_begin(&p, 2);
    program_slot(&p, 1, 1, EE_TYPE_DECIMAL, 2);
    program_slot(&p, 2, 0, EE_TYPE_DECIMAL, 2);
    uint8_t code[32] = {1, 0};
    size_t n = 2 + literal(code + 2, 0, 1);
    code[n++] = 1;
    code[n++] = 1;
    code[n++] = 5; /* 1 - d */
    code[n++] = 6; /* x * (1 - d) */
    program_code(&p, code, n);
    test_grant grants[] = {{1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, p.bytes, p.len},
                           {1, EE_OP_AVG_EXPR, EE_TYPE_DECIMAL, p.bytes, p.len}};
    uint64_t q = begin(c, grants, 2);

    /* Rows: (100.00, 0.05), (20.50, 0.10), (7.00, NULL), (-3.00, 0.50).
     * Groups 0, 0, 1, 2: group 0 = 95.0000 + 18.4500 = 113.4500 (unscaled 1134500 at scale 4),
     * group 1 has only a NULL expression (empty entry), group 2 = -1.5000 (-15000). */
    entries e = {0};
    entry_decimal(&e, CEK1, 10000);
    entry_decimal(&e, CEK1, 2050);
    entry_decimal(&e, CEK1, 700);
    entry_decimal(&e, CEK1, -300);
    entry_decimal(&e, NULL, 5);
    entry_decimal(&e, NULL, 10);
    entry_add(&e, NULL, NULL, 0);
    entry_decimal(&e, NULL, 50);
    int64_t groups[4] = {0, 0, 1, 2};
    uint8_t out[1024], plain[1024];
    int64_t offsets[8], plain_offsets[8];
    size_t out_len = 0;
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &e, groups, 4, 3, out, offsets,
              &out_len) == EE_OK);
    CHECK(offsets[2] == offsets[1]);
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    uint8_t want0[17] = {1, 0xa4, 0x4f, 0x11}; /* 1134500 = 0x114FA4 */
    uint8_t want2[17] = {0, 0x98, 0x3a};       /* 15000 = 0x3A98, negative */
    CHECK(plain_offsets[1] == 17 && memcmp(plain, want0, 17) == 0);
    CHECK(plain_offsets[3] - plain_offsets[2] == 17 && memcmp(plain + 17, want2, 17) == 0);

    /* AVG: group 0 = 113.45 / 2 = 56.725, group 2 = -1.5. */
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_AVG_EXPR, &p, &e, groups, 4, 3, out, offsets,
              &out_len) == EE_OK);
    decrypt_results(out, out_len, offsets, 3, plain, plain_offsets);
    double avg0 = 0, avg2 = 0;
    memcpy(&avg0, plain, 8);
    memcpy(&avg2, plain + 8, 8);
    CHECK(avg0 == 56.725 && avg2 == -1.5);

    /* Not authorized: another op, another type, another result key, a changed program. */
    CHECK(run(q, 2, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &e, groups, 4, 3, out, offsets,
              &out_len) == EE_ERR_NOT_AUTHORIZED);
    CHECK(run(q, 1, EE_TYPE_FLOAT64, EE_OP_SUM_EXPR, &p, &e, groups, 4, 3, out, offsets,
              &out_len) == EE_ERR_NOT_AUTHORIZED);
    program changed = p;
    changed.bytes[changed.len - 1] = 4; /* x + (1 - d) */
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &changed, &e, groups, 4, 3, out, offsets,
              &out_len) == EE_ERR_NOT_AUTHORIZED);
    /* Arguments: a row count that is no multiple of the slots, bad group ids, small output. */
    int64_t bad_groups[4] = {0, 3, 0, 0};
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &e, bad_groups, 4, 3, out, offsets,
              &out_len) == EE_ERR_ARGUMENT);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &e, groups, 3, 3, out, offsets,
              &out_len) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_aggregate_expression(out, 100, &out_len, offsets, 8, q, 1, EE_TYPE_DECIMAL,
                                          EE_OP_SUM_EXPR, p.bytes, p.len, ENTRIES(&e), groups, 4,
                                          3) == EE_ERR_CAPACITY);
    /* A plaintext slot of the wrong shape: a DECIMAL with sign byte 7. */
    entries short_plain = {0};
    entry_decimal(&short_plain, CEK1, 1);
    entry_add(&short_plain, NULL, "\x07\x01", 2);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &short_plain, groups, 1, 1, out,
              offsets, &out_len) == EE_ERR_ARGUMENT);
    /* A tampered cell is an authentication failure. */
    entries tampered = e;
    tampered.data[40] ^= 1;
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &p, &tampered, groups, 4, 3, out, offsets,
              &out_len) == EE_ERR_AUTH);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* Two keys, FLOAT64 and the 10^38 bound. */
static void test_keys_floats_and_overflow(test_client *c) {
    /* a + b: a INT64 under CEK1, b INT64 under CEK2. */
    program two;
    program_begin(&two, 2);
    program_slot(&two, 1, 1, EE_TYPE_INT64, 0);
    program_slot(&two, 1, 2, EE_TYPE_INT64, 0);
    uint8_t add[5] = {1, 0, 1, 1, 4};
    program_code(&two, add, 5);
    /* a * f: a INT64 under CEK1, f FLOAT64 plaintext. */
    program mixed;
    program_begin(&mixed, 2);
    program_slot(&mixed, 1, 1, EE_TYPE_INT64, 0);
    program_slot(&mixed, 2, 0, EE_TYPE_FLOAT64, 0);
    uint8_t mul[5] = {1, 0, 1, 1, 6};
    program_code(&mixed, mul, 5);
    /* a * a * a under CEK1. */
    program cube;
    program_begin(&cube, 1);
    program_slot(&cube, 1, 1, EE_TYPE_INT64, 0);
    uint8_t cubed[8] = {1, 0, 1, 0, 6, 1, 0, 6};
    program_code(&cube, cubed, 8);
    test_grant grants[] = {{1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, two.bytes, two.len},
                           {2, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, two.bytes, two.len},
                           {1, EE_OP_SUM_EXPR, EE_TYPE_FLOAT64, mixed.bytes, mixed.len},
                           {1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, cube.bytes, cube.len},
                           {2, EE_OP_AVG_EXPR, EE_TYPE_DECIMAL, two.bytes, two.len}};
    uint64_t q = begin(c, grants, 5);
    uint8_t out[1024], plain[1024];
    int64_t offsets[8], plain_offsets[8];
    size_t out_len = 0;
    int64_t one_group[2] = {0, 0};

    /* (5 + 7) + (-2 + 1) = 11 */
    entries e = {0};
    entry_int(&e, CEK1, 5);
    entry_int(&e, CEK1, -2);
    entry_int(&e, CEK2, 7);
    entry_int(&e, CEK2, 1);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &two, &e, one_group, 2, 1, out, offsets,
              &out_len) == EE_OK);
    decrypt_results(out, out_len, offsets, 1, plain, plain_offsets);
    uint8_t eleven[17] = {1, 11};
    CHECK(plain_offsets[1] == 17 && memcmp(plain, eleven, 17) == 0);
    /* AVG of the same program is granted on CEK2 only: CEK1 is not authorized for it. */
    CHECK(run(q, 2, EE_TYPE_DECIMAL, EE_OP_AVG_EXPR, &two, &e, one_group, 2, 1, out, offsets,
              &out_len) == EE_ERR_ARGUMENT); /* the result key must be the first slot's */
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_AVG_EXPR, &two, &e, one_group, 2, 1, out, offsets,
              &out_len) == EE_ERR_NOT_AUTHORIZED);
    /* A cell of the CEK2 slot made under CEK1 fails authentication. */
    entries wrong = {0};
    entry_int(&wrong, CEK1, 5);
    entry_int(&wrong, CEK1, 7);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &two, &wrong, one_group, 1, 1, out, offsets,
              &out_len) == EE_ERR_AUTH);

    /* 3 * 0.5 + 4 * 2.25 = 10.5 (exact in binary) */
    entries f = {0};
    entry_int(&f, CEK1, 3);
    entry_int(&f, CEK1, 4);
    entry_double(&f, NULL, 0.5);
    entry_double(&f, NULL, 2.25);
    CHECK(run(q, 1, EE_TYPE_FLOAT64, EE_OP_SUM_EXPR, &mixed, &f, one_group, 2, 1, out, offsets,
              &out_len) == EE_OK);
    decrypt_results(out, out_len, offsets, 1, plain, plain_offsets);
    double sum = 0;
    memcpy(&sum, plain, 8);
    CHECK(plain_offsets[1] == 8 && sum == 10.5);

    /* (10^12)^3 = 10^36 fits; (10^13)^3 = 10^39 does not fit DECIMAL(38). */
    entries small = {0}, big = {0};
    entry_int(&small, CEK1, 1000000000000LL);
    entry_int(&big, CEK1, 10000000000000LL);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &cube, &small, one_group, 1, 1, out,
              offsets, &out_len) == EE_OK);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &cube, &big, one_group, 1, 1, out, offsets,
              &out_len) == EE_ERR_OVERFLOW);
    /* 10^36 summed 60 times is 6 * 10^37, which still fits. */
    entries many = {0};
    int64_t groups[60] = {0};
    for (int i = 0; i < 60; i++) entry_int(&many, CEK1, 1000000000000LL);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &cube, &many, groups, 60, 1, out, offsets,
              &out_len) == EE_OK);
    int64_t max_i64 = INT64_MAX;
    entries huge = {0};
    entry_int(&huge, CEK1, max_i64);
    CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &cube, &huge, one_group, 1, 1, out, offsets,
              &out_len) == EE_ERR_OVERFLOW); /* overflows 128 bits on the way */
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* Each malformed program is granted, so the parse itself must refuse it. */
static void test_bad_programs(test_client *c) {
    program bad[9];
    uint8_t code_ok[3] = {1, 0};
    for (int i = 0; i < 9; i++) {
        program_begin(&bad[i], 1);
        program_slot(&bad[i], 1, 1, EE_TYPE_INT64, 0);
    }
    program_code(&bad[0], code_ok, 2);
    bad[0].bytes[0] = 2; /* version */
    uint8_t out_of_range[2] = {1, 1};
    program_code(&bad[1], out_of_range, 2);
    uint8_t underflow[3] = {1, 0, 4};
    program_code(&bad[2], underflow, 3);
    uint8_t two_left[4] = {1, 0, 1, 0};
    program_code(&bad[3], two_left, 4);
    uint8_t unknown[3] = {1, 0, 9};
    program_code(&bad[4], unknown, 3);
    program_code(&bad[5], code_ok, 2);
    bad[5].len -= 1; /* truncated */
    /* DECIMAL(38,20) * DECIMAL(38,20): scale 40 is beyond DECIMAL(38). */
    program_begin(&bad[6], 1);
    program_slot(&bad[6], 1, 1, EE_TYPE_DECIMAL, 20);
    uint8_t square[5] = {1, 0, 1, 0, 6};
    program_code(&bad[6], square, 5);
    /* No encrypted slot. */
    program_begin(&bad[7], 1);
    program_slot(&bad[7], 2, 0, EE_TYPE_INT64, 0);
    program_code(&bad[7], code_ok, 2);
    /* An unused slot. */
    program_begin(&bad[8], 2);
    program_slot(&bad[8], 1, 1, EE_TYPE_INT64, 0);
    program_slot(&bad[8], 2, 0, EE_TYPE_INT64, 0);
    program_code(&bad[8], code_ok, 2);
    test_grant grants[9];
    for (int i = 0; i < 9; i++) {
        grants[i] = (test_grant){1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, bad[i].bytes, bad[i].len};
    }
    uint64_t q = begin(c, grants, 9);
    entries e = {0};
    entry_int(&e, CEK1, 1);
    int64_t groups[1] = {0};
    uint8_t out[1024];
    int64_t offsets[8];
    size_t out_len = 0;
    for (int i = 0; i < 9; i++) {
        CHECK(run(q, 1, EE_TYPE_DECIMAL, EE_OP_SUM_EXPR, &bad[i], &e, groups, 1, 1, out, offsets,
                  &out_len) == EE_ERR_PACKAGE);
    }
    /* The right program under the wrong result type: authorized, then refused by type. */
    CHECK(ee_enclave_end_query(q) == EE_OK);
    program ok;
    program_begin(&ok, 1);
    program_slot(&ok, 1, 1, EE_TYPE_INT64, 0);
    program_code(&ok, code_ok, 2);
    test_grant float_grant = {1, EE_OP_SUM_EXPR, EE_TYPE_FLOAT64, ok.bytes, ok.len};
    q = begin(c, &float_grant, 1);
    CHECK(run(q, 1, EE_TYPE_FLOAT64, EE_OP_SUM_EXPR, &ok, &e, groups, 1, 1, out, offsets,
              &out_len) == EE_ERR_TYPE);
    CHECK(run(q, 1, EE_TYPE_FLOAT64, EE_OP_SUM, &ok, &e, groups, 1, 1, out, offsets,
              &out_len) == EE_ERR_ARGUMENT);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* ---- ee_enclave_aggregate_stage (5d) ------------------------------------------------------------ */

typedef struct layout {
    uint8_t bytes[1024];
    size_t len;
} layout;

static void layout_begin(layout *l, uint8_t slot_count, uint8_t output_count) {
    l->bytes[0] = 1;
    l->bytes[1] = slot_count;
    l->bytes[2] = output_count;
    l->len = 3;
}

static void layout_output(layout *l, int32_t op, int32_t type_code, uint16_t cek_id,
                          uint8_t decimal_scale, const program *p, const uint8_t *slots,
                          size_t slot_count) {
    uint8_t *o = l->bytes + l->len;
    size_t constant_len = p == NULL ? 0 : p->len;
    o[0] = (uint8_t)op;
    o[1] = (uint8_t)type_code;
    o[2] = (uint8_t)cek_id;
    o[3] = (uint8_t)(cek_id >> 8);
    o[4] = decimal_scale;
    o[5] = (uint8_t)constant_len;
    o[6] = (uint8_t)(constant_len >> 8);
    if (p != NULL) memcpy(o + 7, p->bytes, p->len);
    memcpy(o + 7 + constant_len, slots, slot_count);
    l->len += 7 + constant_len + slot_count;
}

static ee_status run_stage(uint64_t q, const layout *l, const int32_t *offsets, size_t count,
                           const uint8_t *data, size_t data_len, const uint8_t *validity,
                           size_t validity_len, const int64_t *groups, size_t rows,
                           size_t group_count, uint8_t *out, size_t out_cap, int64_t *out_offsets,
                           size_t out_offsets_cap, size_t *out_len) {
    return ee_enclave_aggregate_stage(out, out_cap, out_len, out_offsets, out_offsets_cap, q,
                                      l->bytes, l->len, offsets, count + 1, data, data_len,
                                      validity, validity_len, 0, count, groups, rows,
                                      group_count);
}

#define STAGE_ENTRIES(e)                                                                        \
    (e)->offsets, (e)->count, (e)->data, (e)->len, (e)->validity, sizeof (e)->validity

/* Decrypts up to 16 result cells under CEK1; an empty entry is a null. */
static void decrypt_many(const uint8_t *data, size_t data_len, const int64_t *offsets,
                         size_t count, uint8_t *plain, int64_t *plain_offsets) {
    int32_t offsets32[17];
    uint8_t validity[2] = {0, 0};
    for (size_t i = 0; i <= count; i++) offsets32[i] = (int32_t)offsets[i];
    for (size_t i = 0; i < count; i++) {
        if (offsets[i + 1] > offsets[i]) validity[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    uint64_t key = 0;
    size_t out_len = 0, failed = 0;
    CHECK(ee_key_load(&key, CEK1, 32) == EE_OK);
    CHECK(ee_cell_decrypt_batch(plain, 2048, &out_len, plain_offsets, count + 1, &failed, key,
                                offsets32, count + 1, data, data_len, validity, 2, 0,
                                count) == EE_OK);
    CHECK(failed == 0);
    CHECK(ee_key_free(key) == EE_OK);
}

/* The program x * (1 - d), both DECIMAL(15,2) under CEK1. */
static void price_times_one_minus_discount(program *p) {
    program_begin(p, 2);
    program_slot(p, 1, 1, EE_TYPE_DECIMAL, 2);
    program_slot(p, 1, 1, EE_TYPE_DECIMAL, 2);
    uint8_t code[32] = {1, 0};
    size_t n = 2 + literal(code + 2, 0, 1);
    code[n++] = 1;
    code[n++] = 1;
    code[n++] = 5; /* 1 - d */
    code[n++] = 6; /* x * (1 - d) */
    program_code(p, code, n);
}

/* SUM(x), AVG(d) and SUM(x * (1 - d)) over two shared slots in one call. */
static void test_stage_shares_slots(test_client *c) {
    program p;
    price_times_one_minus_discount(&p);
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_AVG, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, p.bytes, p.len},
                           {1, EE_OP_SUM, EE_TYPE_INT64, NULL, 0}};
    uint64_t q = begin(c, grants, 4);

    /* Slot 0 (x): 100.00, 20.50, 7.00, -3.00. Slot 1 (d): 0.05, 0.10, NULL, 0.50.
     * Groups 0, 0, 1, 2. By hand:
     *   SUM(x):         g0 120.50 (12050 = 0x2F12), g1 7.00 (700 = 0x2BC), g2 -3.00 (300 = 0x12C)
     *   AVG(d) (scale 2): g0 (5 + 10) / 2 / 100 = 0.075, g1 null, g2 0.5
     *   SUM(x * (1 - d)): g0 95.0000 + 18.4500 = 113.4500 (1134500 = 0x114FA4), g1 null,
     *                     g2 -1.5000 (15000 = 0x3A98, negative) */
    entries e = {0};
    entry_decimal(&e, CEK1, 10000);
    entry_decimal(&e, CEK1, 2050);
    entry_decimal(&e, CEK1, 700);
    entry_decimal(&e, CEK1, -300);
    entry_decimal(&e, CEK1, 5);
    entry_decimal(&e, CEK1, 10);
    entry_add(&e, NULL, NULL, 0);
    entry_decimal(&e, CEK1, 50);
    int64_t groups[4] = {0, 0, 1, 2};
    uint8_t zero[1] = {0}, one[1] = {1}, both[2] = {0, 1};
    layout l;
    layout_begin(&l, 2, 3);
    layout_output(&l, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    layout_output(&l, EE_OP_AVG, EE_TYPE_DECIMAL, 1, 2, NULL, one, 1);
    layout_output(&l, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, 1, 0, &p, both, 2);
    uint8_t out[2048], plain[2048];
    int64_t offsets[16], plain_offsets[16];
    size_t out_len = 0;
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_OK);
    CHECK(offsets[9] == (int64_t)out_len);
    decrypt_many(out, out_len, offsets, 9, plain, plain_offsets);
    uint8_t sum0[17] = {1, 0x12, 0x2f}, sum1[17] = {1, 0xbc, 0x02}, sum2[17] = {0, 0x2c, 0x01};
    CHECK(plain_offsets[1] == 17 && memcmp(plain, sum0, 17) == 0);
    CHECK(memcmp(plain + plain_offsets[1], sum1, 17) == 0);
    CHECK(memcmp(plain + plain_offsets[2], sum2, 17) == 0);
    double avg0 = 0, avg2 = 0;
    memcpy(&avg0, plain + plain_offsets[3], 8);
    CHECK(plain_offsets[4] - plain_offsets[3] == 8 && avg0 == 0.075);
    CHECK(offsets[5] == offsets[4]); /* AVG(d) of group 1: null */
    memcpy(&avg2, plain + plain_offsets[5], 8);
    CHECK(avg2 == 0.5);
    uint8_t expr0[17] = {1, 0xa4, 0x4f, 0x11}, expr2[17] = {0, 0x98, 0x3a};
    CHECK(memcmp(plain + plain_offsets[6], expr0, 17) == 0);
    CHECK(offsets[8] == offsets[7]); /* x * (1 - d) of group 1: d is null */
    CHECK(plain_offsets[9] - plain_offsets[8] == 17 &&
          memcmp(plain + plain_offsets[8], expr2, 17) == 0);

    /* Each output is authorized on its own: AVG of x under CEK2, MAX, and a changed program. */
    layout bad;
    layout_begin(&bad, 2, 2);
    layout_output(&bad, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    layout_output(&bad, EE_OP_AVG, EE_TYPE_DECIMAL, 2, 2, NULL, one, 1);
    CHECK(run_stage(q, &bad, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_NOT_AUTHORIZED);
    layout_begin(&bad, 1, 1);
    layout_output(&bad, EE_OP_MAX, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    CHECK(run_stage(q, &bad, e.offsets, 4, e.data, e.len, e.validity, 1, groups, 4, 3, out,
                    sizeof out, offsets, 10, &out_len) == EE_ERR_ARGUMENT);
    program changed = p;
    changed.bytes[changed.len - 1] = 4; /* x + (1 - d) */
    layout_begin(&bad, 2, 1);
    layout_output(&bad, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, 1, 0, &changed, both, 2);
    CHECK(run_stage(q, &bad, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_NOT_AUTHORIZED);
    /* Readers that disagree on a slot (DECIMAL for the program, INT64 for the SUM). */
    layout_begin(&bad, 2, 2);
    layout_output(&bad, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, 1, 0, &p, both, 2);
    layout_output(&bad, EE_OP_SUM, EE_TYPE_INT64, 1, 0, NULL, one, 1);
    CHECK(run_stage(q, &bad, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_ARGUMENT);
    /* A slot nobody reads, a slot index out of range, trailing bytes, a wrong version. */
    layout_begin(&bad, 2, 1);
    layout_output(&bad, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    CHECK(run_stage(q, &bad, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_ARGUMENT);
    uint8_t two[1] = {2};
    layout_begin(&bad, 2, 1);
    layout_output(&bad, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, two, 1);
    CHECK(run_stage(q, &bad, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_ARGUMENT);
    layout trailing = l;
    trailing.bytes[trailing.len++] = 0;
    CHECK(run_stage(q, &trailing, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_ARGUMENT);
    layout truncated = l;
    truncated.len -= 1;
    CHECK(run_stage(q, &truncated, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets,
                    10, &out_len) == EE_ERR_ARGUMENT);
    layout version = l;
    version.bytes[0] = 2;
    CHECK(run_stage(q, &version, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_ARGUMENT);
    /* Room: one offset short, and output data one byte short of the nine cells. */
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&e), groups, 4, 3, out, sizeof out, offsets, 9,
                    &out_len) == EE_ERR_CAPACITY);
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&e), groups, 4, 3, out, out_len - 1, offsets, 10,
                    &out_len) == EE_ERR_CAPACITY);
    /* Rows that are no multiple of the slots, and a tampered cell. */
    CHECK(run_stage(q, &l, e.offsets, 7, e.data, e.offsets[7], e.validity, 1, groups, 4, 3, out,
                    sizeof out, offsets, 10, &out_len) == EE_ERR_ARGUMENT);
    entries tampered = e;
    tampered.data[tampered.offsets[5] - 1] ^= 1;
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&tampered), groups, 4, 3, out, sizeof out, offsets, 10,
                    &out_len) == EE_ERR_AUTH);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* Enough rows for several threads: x_i = i - 70000 (INT64 under CEK1) in group i % 3, every
 * seventh row skipped (-1). The expected sums come from a plain loop here. */
static void test_stage_threads(test_client *c) {
    enum { ROWS = 140003 };
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_AVG, EE_TYPE_INT64, NULL, 0}};
    uint64_t q = begin(c, grants, 2);
    int32_t *offsets = calloc(ROWS + 1, sizeof *offsets);
    uint8_t *data = malloc((size_t)ROWS * 96);
    uint8_t *validity = calloc(ROWS / 8 + 1, 1);
    int64_t *groups = malloc(ROWS * sizeof *groups);
    CHECK(offsets != NULL && data != NULL && validity != NULL && groups != NULL);
    int64_t want[3] = {0, 0, 0}, rows_in[3] = {0, 0, 0};
    size_t len = 0;
    for (size_t i = 0; i < ROWS; i++) {
        int64_t v = (int64_t)i - 70000;
        uint8_t b[8];
        for (int k = 0; k < 8; k++) b[k] = (uint8_t)((uint64_t)v >> (8 * k));
        len = test_append_row(offsets, data, len, validity, i, CEK1, b, 8);
        groups[i] = i % 7 == 0 ? -1 : (int64_t)(i % 3);
        if (groups[i] >= 0) {
            want[groups[i]] += v;
            rows_in[groups[i]]++;
        }
    }
    uint8_t zero[1] = {0};
    layout l;
    layout_begin(&l, 1, 2);
    layout_output(&l, EE_OP_SUM, EE_TYPE_INT64, 1, 0, NULL, zero, 1);
    layout_output(&l, EE_OP_AVG, EE_TYPE_INT64, 1, 0, NULL, zero, 1);
    uint8_t out[2048], plain[2048];
    int64_t out_offsets[16], plain_offsets[16];
    size_t out_len = 0;
    CHECK(ee_enclave_aggregate_stage(out, sizeof out, &out_len, out_offsets, 7, q, l.bytes, l.len,
                                     offsets, ROWS + 1, data, len, validity, ROWS / 8 + 1, 0,
                                     ROWS, groups, ROWS, 3) == EE_OK);
    decrypt_many(out, out_len, out_offsets, 6, plain, plain_offsets);
    for (int g = 0; g < 3; g++) {
        const uint8_t *sum = plain + plain_offsets[g];
        uint64_t magnitude = 0;
        for (int k = 8; k >= 1; k--) magnitude = (magnitude << 8) | sum[k];
        int64_t got = sum[0] == 1 ? (int64_t)magnitude : -(int64_t)magnitude;
        CHECK(plain_offsets[g + 1] - plain_offsets[g] == 17 && got == want[g]);
        double average = 0;
        memcpy(&average, plain + plain_offsets[3 + g], 8);
        CHECK(average == (double)((long double)want[g] / (long double)rows_in[g]));
    }
    /* A tampered cell in the second thread's rows still fails the whole call. */
    data[offsets[ROWS - 2]] ^= 1;
    CHECK(ee_enclave_aggregate_stage(out, sizeof out, &out_len, out_offsets, 7, q, l.bytes, l.len,
                                     offsets, ROWS + 1, data, len, validity, ROWS / 8 + 1, 0,
                                     ROWS, groups, ROWS, 3) == EE_ERR_AUTH);
    free(offsets);
    free(data);
    free(validity);
    free(groups);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* An overflow in any output fails the whole call, before any cell is written. */
static void test_stage_overflow(test_client *c) {
    program cube;
    program_begin(&cube, 1);
    program_slot(&cube, 1, 1, EE_TYPE_INT64, 0);
    uint8_t code[] = {1, 0, 1, 0, 6, 1, 0, 6}; /* x * x * x */
    program_code(&cube, code, sizeof code);
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_INT64, NULL, 0},
                           {1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, cube.bytes, cube.len}};
    uint64_t q = begin(c, grants, 2);
    /* 4 * 10^18 cubed is 6.4 * 10^55, far past 10^38; 2 cubed is 8. */
    entries big = {0}, small = {0};
    entry_int(&big, CEK1, 4000000000000000000);
    entry_int(&small, CEK1, 2);
    int64_t groups[1] = {0};
    uint8_t zero[1] = {0};
    layout l;
    layout_begin(&l, 1, 2);
    layout_output(&l, EE_OP_SUM, EE_TYPE_INT64, 1, 0, NULL, zero, 1);
    layout_output(&l, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, 1, 0, &cube, zero, 1);
    uint8_t out[1024], plain[2048];
    int64_t offsets[4], plain_offsets[4];
    size_t out_len = 12345;
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&big), groups, 1, 1, out, sizeof out, offsets, 3,
                    &out_len) == EE_ERR_OVERFLOW);
    CHECK(out_len == 12345);
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&small), groups, 1, 1, out, sizeof out, offsets, 3,
                    &out_len) == EE_OK);
    decrypt_many(out, out_len, offsets, 2, plain, plain_offsets);
    uint8_t two[17] = {1, 2}, eight[17] = {1, 8};
    CHECK(plain_offsets[1] == 17 && memcmp(plain, two, 17) == 0);
    CHECK(plain_offsets[2] == 34 && memcmp(plain + 17, eight, 17) == 0);

    /* A DECIMAL value of 10^38 (no DECIMAL(38) holds it) overflows a plain SUM; 10^38 - 1 is
     * summed as it is. The 16-byte magnitudes are 10^38 and 10^38 - 1, little-endian. */
    static const uint8_t ten_38[17] = {1,   0,   0,   0,   0,  64, 34,  138, 9,
                                       122, 196, 134, 90, 168, 76, 59, 75};
    uint8_t below[17];
    memcpy(below, ten_38, 17);
    below[1] = below[2] = below[3] = below[4] = 255;
    below[5] = 63;
    test_grant decimal_grant[] = {{1, EE_OP_SUM, EE_TYPE_DECIMAL, NULL, 0}};
    uint64_t q2 = begin(c, decimal_grant, 1);
    layout d;
    layout_begin(&d, 1, 1);
    layout_output(&d, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 0, NULL, zero, 1);
    entries too_big = {0}, largest = {0};
    entry_add(&too_big, CEK1, ten_38, 17);
    entry_add(&largest, CEK1, below, 17);
    CHECK(run_stage(q2, &d, STAGE_ENTRIES(&too_big), groups, 1, 1, out, sizeof out, offsets, 3,
                    &out_len) == EE_ERR_OVERFLOW);
    CHECK(run_stage(q2, &d, STAGE_ENTRIES(&largest), groups, 1, 1, out, sizeof out, offsets, 3,
                    &out_len) == EE_OK);
    decrypt_many(out, out_len, offsets, 1, plain, plain_offsets);
    CHECK(plain_offsets[1] == 17 && memcmp(plain, below, 17) == 0);
    CHECK(ee_enclave_end_query(q2) == EE_OK);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

/* ---- Sealed stage states (5e) ----------------------------------------------------------------- */

/* A sealed-state array (Arrow binary) built from the entries of earlier accumulate outputs. */
typedef struct sealed {
    uint8_t data[4096];
    int32_t offsets[17];
    uint8_t validity[3];
    size_t count, len;
} sealed;

static void sealed_add(sealed *s, const uint8_t *data, const int64_t *offsets, size_t i) {
    size_t n = (size_t)(offsets[i + 1] - offsets[i]);
    if (s->count == 0) s->offsets[0] = 0;
    memcpy(s->data + s->len, data + offsets[i], n);
    s->len += n;
    if (n > 0) s->validity[s->count / 8] |= (uint8_t)(1u << (s->count % 8));
    s->offsets[++s->count] = (int32_t)s->len;
}

static void sealed_null(sealed *s) {
    if (s->count == 0) s->offsets[0] = 0;
    s->offsets[++s->count] = (int32_t)s->len;
}

static ee_status accumulate(uint64_t q, const layout *l, const entries *e, const int64_t *groups,
                            size_t rows, const sealed *in, const int64_t *state_groups,
                            size_t group_count, uint8_t *out, size_t out_cap, int64_t *offsets) {
    static const int32_t none[1] = {0};
    size_t out_len = 0;
    return ee_enclave_stage_accumulate(
        out, out_cap, &out_len, offsets, group_count + 1, q, l->bytes, l->len,
        e == NULL ? none : e->offsets, e == NULL ? 1 : e->count + 1, e == NULL ? NULL : e->data,
        e == NULL ? 0 : e->len, e == NULL ? NULL : e->validity, e == NULL ? 0 : sizeof e->validity,
        0, e == NULL ? 0 : e->count, groups, rows, in == NULL ? none : in->offsets,
        in == NULL ? 1 : in->count + 1, in == NULL ? NULL : in->data, in == NULL ? 0 : in->len,
        in == NULL ? NULL : in->validity, in == NULL ? 0 : sizeof in->validity,
        in == NULL ? 0 : in->count, state_groups, in == NULL ? 0 : in->count, group_count);
}

static ee_status finish(uint64_t q, const layout *l, const sealed *in, uint8_t *out,
                        size_t out_cap, int64_t *offsets, size_t offsets_cap, size_t *out_len) {
    return ee_enclave_stage_finish(out, out_cap, out_len, offsets, offsets_cap, q, l->bytes,
                                   l->len, in->offsets, in->count + 1, in->data, in->len,
                                   in->validity, sizeof in->validity, in->count);
}

/* The stage of test_stage_shares_slots folded in two halves and merged gives exactly the
 * plaintexts of the one-call stage; a forged, foreign or tampered state is EE_ERR_AUTH. */
static void test_stage_states(test_client *c) {
    program p;
    price_times_one_minus_discount(&p);
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_AVG, EE_TYPE_DECIMAL, NULL, 0},
                           {1, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, p.bytes, p.len}};
    uint64_t q = begin(c, grants, 3);
    entries e = {0};
    entry_decimal(&e, CEK1, 10000);
    entry_decimal(&e, CEK1, 2050);
    entry_decimal(&e, CEK1, 700);
    entry_decimal(&e, CEK1, -300);
    entry_decimal(&e, CEK1, 5);
    entry_decimal(&e, CEK1, 10);
    entry_add(&e, NULL, NULL, 0);
    entry_decimal(&e, CEK1, 50);
    uint8_t zero[1] = {0}, one[1] = {1}, both[2] = {0, 1};
    layout l;
    layout_begin(&l, 2, 3);
    layout_output(&l, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    layout_output(&l, EE_OP_AVG, EE_TYPE_DECIMAL, 1, 2, NULL, one, 1);
    layout_output(&l, EE_OP_SUM_EXPR, EE_TYPE_DECIMAL, 1, 0, &p, both, 2);

    /* The reference: the one-call stage over groups 0, 0, 1, 2. */
    int64_t groups[4] = {0, 0, 1, 2};
    uint8_t want_cells[2048], want[2048], got_cells[2048], got[2048];
    int64_t want_offsets[16], want_plain[16], got_offsets[16], got_plain[16];
    size_t want_len = 0, got_len = 0;
    CHECK(run_stage(q, &l, STAGE_ENTRIES(&e), groups, 4, 3, want_cells, sizeof want_cells,
                    want_offsets, 10, &want_len) == EE_OK);
    decrypt_many(want_cells, want_len, want_offsets, 9, want, want_plain);

    /* Half the rows each (the others skipped with -1), then one merge of both halves' states. */
    int64_t first[4] = {0, -1, 1, -1}, second[4] = {-1, 0, -1, 2};
    uint8_t a[2048], b[2048], merged[2048];
    int64_t a_offsets[8], b_offsets[8], merged_offsets[8];
    CHECK(accumulate(q, &l, &e, first, 4, NULL, NULL, 3, a, sizeof a, a_offsets) == EE_OK);
    CHECK(accumulate(q, &l, &e, second, 4, NULL, NULL, 3, b, sizeof b, b_offsets) == EE_OK);
    CHECK(a_offsets[1] - a_offsets[0] == 65 + 32 * 3); /* the length depends on the layout */
    sealed both_halves = {0};
    for (size_t g = 0; g < 3; g++) sealed_add(&both_halves, a, a_offsets, g);
    for (size_t g = 0; g < 3; g++) sealed_add(&both_halves, b, b_offsets, g);
    int64_t targets[6] = {0, 1, 2, 0, 1, 2};
    CHECK(accumulate(q, &l, NULL, NULL, 0, &both_halves, targets, 3, merged, sizeof merged,
                     merged_offsets) == EE_OK);
    sealed states = {0};
    for (size_t g = 0; g < 3; g++) sealed_add(&states, merged, merged_offsets, g);
    CHECK(finish(q, &l, &states, got_cells, sizeof got_cells, got_offsets, 10, &got_len) ==
          EE_OK);
    decrypt_many(got_cells, got_len, got_offsets, 9, got, got_plain);
    for (size_t i = 0; i <= 9; i++) CHECK(got_plain[i] == want_plain[i]);
    CHECK(memcmp(got, want, (size_t)want_plain[9]) == 0);

    /* A missing state is an empty group: every output null. */
    sealed with_null = {0};
    sealed_add(&with_null, merged, merged_offsets, 0);
    sealed_null(&with_null);
    CHECK(finish(q, &l, &with_null, got_cells, sizeof got_cells, got_offsets, 7, &got_len) ==
          EE_OK);
    CHECK(got_offsets[2] == got_offsets[1] && got_offsets[4] == got_offsets[3] &&
          got_offsets[6] == got_offsets[5] && got_offsets[1] > got_offsets[0]);

    /* A flipped byte, a state of another query, a target out of range, a layout not granted. */
    sealed tampered = states;
    tampered.data[10] ^= 1;
    CHECK(finish(q, &l, &tampered, got_cells, sizeof got_cells, got_offsets, 10, &got_len) ==
          EE_ERR_AUTH);
    uint64_t q2 = begin(c, grants, 3);
    CHECK(finish(q2, &l, &states, got_cells, sizeof got_cells, got_offsets, 10, &got_len) ==
          EE_ERR_AUTH);
    CHECK(ee_enclave_end_query(q2) == EE_OK);
    layout shorter;
    layout_begin(&shorter, 1, 1);
    layout_output(&shorter, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 2, NULL, zero, 1);
    CHECK(finish(q, &shorter, &states, got_cells, sizeof got_cells, got_offsets, 10,
                 &got_len) == EE_ERR_AUTH); /* another layout's key */
    int64_t far[6] = {0, 1, 3, 0, 1, 2};
    CHECK(accumulate(q, &l, NULL, NULL, 0, &both_halves, far, 3, merged, sizeof merged,
                     merged_offsets) == EE_ERR_ARGUMENT);
    layout foreign;
    layout_begin(&foreign, 1, 1);
    layout_output(&foreign, EE_OP_SUM, EE_TYPE_DECIMAL, 2, 2, NULL, zero, 1);
    CHECK(accumulate(q, &foreign, NULL, NULL, 0, NULL, NULL, 1, merged, sizeof merged,
                     merged_offsets) == EE_ERR_NOT_AUTHORIZED);
    /* A tampered cell among the rows. */
    entries bad = e;
    bad.data[bad.offsets[1] - 1] ^= 1;
    CHECK(accumulate(q, &l, &bad, groups, 4, NULL, NULL, 3, a, sizeof a, a_offsets) ==
          EE_ERR_AUTH);
    CHECK(ee_enclave_end_query(q) == EE_OK);
    /* After the query ends its states open nowhere. */
    CHECK(finish(q, &l, &states, got_cells, sizeof got_cells, got_offsets, 10, &got_len) ==
          EE_ERR_QUERY);
}

/* Overflow: partial sums may leave DECIMAL(38) on the way; the finished result may not. */
static void test_stage_states_overflow(test_client *c) {
    test_grant grants[] = {{1, EE_OP_SUM, EE_TYPE_DECIMAL, NULL, 0}};
    uint64_t q = begin(c, grants, 1);
    uint8_t zero[1] = {0};
    layout l;
    layout_begin(&l, 1, 1);
    layout_output(&l, EE_OP_SUM, EE_TYPE_DECIMAL, 1, 0, NULL, zero, 1);
    /* 6 * 10^37, twice: 1.2 * 10^38 is no DECIMAL(38). */
    uint8_t big[17] = {1};
    unsigned __int128 v = (unsigned __int128)6;
    for (int i = 0; i < 37; i++) v *= 10;
    for (int i = 0; i < 16; i++) big[1 + i] = (uint8_t)(v >> (8 * i));
    entries e = {0};
    entry_add(&e, CEK1, big, 17);
    entry_add(&e, CEK1, big, 17);
    int64_t groups[2] = {0, 0};
    uint8_t out[2048], cells[2048];
    int64_t offsets[4], cell_offsets[4];
    size_t len = 0;
    CHECK(accumulate(q, &l, &e, groups, 2, NULL, NULL, 1, out, sizeof out, offsets) == EE_OK);
    sealed states = {0};
    sealed_add(&states, out, offsets, 0);
    CHECK(finish(q, &l, &states, cells, sizeof cells, cell_offsets, 2, &len) == EE_ERR_OVERFLOW);
    CHECK(ee_enclave_end_query(q) == EE_OK);
}

int main(void) {
    snprintf(platform_dir, sizeof platform_dir, "/tmp/ee_platform_XXXXXX");
    if (mkdtemp(platform_dir) == NULL) return 1;
    rng_fill(CEK1, 32);
    rng_fill(CEK2, 32);
    test_client c;
    CHECK(test_open(&c, platform_dir) == EE_OK);
    test_decimal_sum_and_avg(&c);
    test_keys_floats_and_overflow(&c);
    test_bad_programs(&c);
    test_stage_shares_slots(&c);
    test_stage_threads(&c);
    test_stage_overflow(&c);
    test_stage_states(&c);
    test_stage_states_overflow(&c);
    CHECK(ee_enclave_close_session(c.session_id) == EE_OK);
    CHECK(ee_test_secret_outstanding() == 0);
    test_remove_platform_dir(platform_dir);
    printf("expression: %d failure(s)\n", test_failures);
    return test_failures == 0 ? 0 : 1;
}

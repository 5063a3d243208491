/* test_cell.c: C unit tests of the cell codec, run under ASan and UBSan by `make test`.
 *
 * Expected cells come from an independent EVP oracle (test_support.h), never from the code under
 * test. Each test runs against every implementation this CPU offers.
 */
#include "../src/cell_internal.h"
#include "test_support.h"

static const char *impl_name(int32_t impl) { return impl == EE_IMPL_FAST ? "fast" : "portable"; }

/* Encrypts rows (lens/pts, all valid unless validity given) in one batch call. */
typedef struct batch {
    size_t count;
    int32_t *offsets;
    uint8_t *data;
    size_t data_len;
    uint8_t *validity;
} batch;

static batch make_batch(size_t count, const size_t *lens, int with_nulls) {
    batch b;
    b.count = count;
    b.offsets = calloc(count + 1, sizeof(int32_t));
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += lens[i];
    b.data = malloc(total + 1);
    b.data_len = total;
    rng_fill(b.data, total);
    for (size_t i = 0; i < count; i++) b.offsets[i + 1] = b.offsets[i] + (int32_t)lens[i];
    b.validity = NULL;
    if (with_nulls) {
        b.validity = calloc((count + 7) / 8 + 1, 1);
        for (size_t i = 0; i < count; i++) {
            if (rng_next() % 4 != 0) b.validity[i / 8] |= (uint8_t)(1u << (i % 8));
        }
    }
    return b;
}

static void free_batch(batch *b) {
    free(b->offsets);
    free(b->data);
    free(b->validity);
}

static int row_valid(const batch *b, size_t i) {
    return b->validity == NULL || ((b->validity[i / 8] >> (i % 8)) & 1);
}

static void test_derive_matches_oracle(void) {
    uint8_t root[32], out[96], enc[32], mac[32], iv[32];
    size_t out_len = 0;
    for (int round = 0; round < 8; round++) {
        rng_fill(root, 32);
        CHECK(ee_key_derive(out, sizeof out, &out_len, root, 32) == EE_OK);
        CHECK(out_len == 96);
        oracle_derive(root, enc, mac, iv);
        CHECK(memcmp(out, enc, 32) == 0);
        CHECK(memcmp(out + 32, mac, 32) == 0);
        CHECK(memcmp(out + 64, iv, 32) == 0);
    }
    CHECK(ee_key_derive(out, sizeof out, &out_len, root, 31) == EE_ERR_KEY_LENGTH);
    CHECK(ee_key_derive(out, 95, &out_len, root, 32) == EE_ERR_CAPACITY);
    CHECK(ee_key_derive(NULL, 96, &out_len, root, 32) == EE_ERR_ARGUMENT);
}

/* Every length 0..300 in one batch, with nulls, for a given mode; compares with the oracle and
 * decrypts back. */
static void test_roundtrip_against_oracle(int32_t mode, int with_nulls) {
    enum { COUNT = 301 };
    size_t lens[COUNT];
    for (size_t i = 0; i < COUNT; i++) lens[i] = i;
    /* Shuffle so short and long cells interleave and runs of short cells break at odd places. */
    for (size_t i = COUNT - 1; i > 0; i--) {
        size_t j = rng_next() % (i + 1);
        size_t t = lens[i];
        lens[i] = lens[j];
        lens[j] = t;
    }
    batch b = make_batch(COUNT, lens, with_nulls);
    uint8_t root[32];
    rng_fill(root, 32);
    uint64_t key = 0;
    CHECK(ee_key_load(&key, root, 32) == EE_OK);

    size_t valid = 0, cap = 0;
    for (size_t i = 0; i < COUNT; i++) {
        if (row_valid(&b, i)) {
            valid++;
            cap += 49 + 16 * (lens[i] / 16 + 1);
        }
    }
    uint8_t *ivs = malloc(16 * valid + 1);
    rng_fill(ivs, 16 * valid);
    uint8_t *cells = malloc(cap + 1);
    int64_t *cell_offsets = calloc(COUNT + 1, sizeof(int64_t));
    size_t cells_len = 0;
    ee_status st = ee_cell_encrypt_batch(cells, cap, &cells_len, cell_offsets, COUNT + 1, key, mode,
                                         b.offsets, COUNT + 1, b.data, b.data_len, b.validity,
                                         b.validity ? (COUNT + 7) / 8 : 0, 0, COUNT, ivs,
                                         mode == EE_CELL_GIVEN_IV ? 16 * valid : 0);
    CHECK(st == EE_OK);
    CHECK(cells_len == cap);

    /* Compare each cell with the oracle (randomized cells: with their own IV). */
    uint8_t *expected = malloc(400);
    size_t iv_at = 0;
    for (size_t i = 0; i < COUNT; i++) {
        size_t len = (size_t)(cell_offsets[i + 1] - cell_offsets[i]);
        if (!row_valid(&b, i)) {
            CHECK(len == 0);
            continue;
        }
        const uint8_t *cell = cells + cell_offsets[i];
        const uint8_t *pt = b.data + b.offsets[i];
        uint8_t iv[16];
        if (mode == EE_CELL_DETERMINISTIC) {
            oracle_deterministic_iv(root, pt, lens[i], iv);
        } else if (mode == EE_CELL_GIVEN_IV) {
            memcpy(iv, ivs + 16 * iv_at, 16);
        } else {
            memcpy(iv, cell + 33, 16);
        }
        iv_at++;
        size_t expected_len = oracle_cell(root, pt, lens[i], iv, 0, expected);
        CHECK(len == expected_len);
        CHECK(len == expected_len && memcmp(cell, expected, len) == 0);
    }

    /* Decrypt the batch back. Cells use int64 offsets; the decrypt input takes int32. */
    int32_t *offsets32 = calloc(COUNT + 1, sizeof(int32_t));
    for (size_t i = 0; i <= COUNT; i++) offsets32[i] = (int32_t)cell_offsets[i];
    uint8_t *plain = malloc(cap + 1);
    int64_t *plain_offsets = calloc(COUNT + 1, sizeof(int64_t));
    size_t plain_len = 0, failed = 99;
    st = ee_cell_decrypt_batch(plain, cap, &plain_len, plain_offsets, COUNT + 1, &failed, key,
                               offsets32, COUNT + 1, cells, cells_len, b.validity,
                               b.validity ? (COUNT + 7) / 8 : 0, 0, COUNT);
    CHECK(st == EE_OK);
    for (size_t i = 0; i < COUNT; i++) {
        size_t len = (size_t)(plain_offsets[i + 1] - plain_offsets[i]);
        if (!row_valid(&b, i)) {
            CHECK(len == 0);
            continue;
        }
        CHECK(len == lens[i]);
        CHECK(len == lens[i] && memcmp(plain + plain_offsets[i], b.data + b.offsets[i], len) == 0);
    }
    CHECK(ee_key_free(key) == EE_OK);
    free(ivs);
    free(cells);
    free(cell_offsets);
    free(expected);
    free(offsets32);
    free(plain);
    free(plain_offsets);
    free_batch(&b);
}

/* Decrypts a single cell; returns the status. */
static ee_status decrypt_one(uint64_t key, const uint8_t *cell, size_t cell_len, uint8_t *out,
                             size_t *out_len) {
    int32_t offsets[2] = {0, (int32_t)cell_len};
    int64_t out_offsets[2];
    size_t failed = 0;
    size_t cap = cell_len > 49 ? cell_len - 49 : 0;
    return ee_cell_decrypt_batch(cap ? out : NULL, cap, out_len, out_offsets, 2, &failed, key,
                                 offsets, 2, cell, cell_len, NULL, 0, 0, 1);
}

static void test_tampering(void) {
    uint8_t root[32], other[32], iv[16], pt[40], cell[160], bad[160], out[200];
    size_t out_len = 0;
    rng_fill(root, 32);
    rng_fill(other, 32);
    uint64_t key = 0, wrong = 0;
    CHECK(ee_key_load(&key, root, 32) == EE_OK);
    CHECK(ee_key_load(&wrong, other, 32) == EE_OK);
    size_t pt_lens[3] = {8, 20, 40};
    for (int k = 0; k < 3; k++) {
        rng_fill(pt, sizeof pt);
        rng_fill(iv, 16);
        size_t n = oracle_cell(root, pt, pt_lens[k], iv, 0, cell);
        CHECK(decrypt_one(key, cell, n, out, &out_len) == EE_OK);
        CHECK(out_len == pt_lens[k] && memcmp(out, pt, out_len) == 0);
        /* Every single bit flip anywhere in the cell. */
        for (size_t bit = 0; bit < 8 * n; bit++) {
            memcpy(bad, cell, n);
            bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            CHECK(decrypt_one(key, bad, n, out, &out_len) == EE_ERR_AUTH);
        }
        /* Truncations, one byte and one block; an extension by one block. */
        CHECK(decrypt_one(key, cell, n - 1, out, &out_len) == EE_ERR_AUTH);
        CHECK(decrypt_one(key, cell, n - 16, out, &out_len) == EE_ERR_AUTH);
        memcpy(bad, cell, n);
        rng_fill(bad + n, 16);
        CHECK(decrypt_one(key, bad, n + 16, out, &out_len) == EE_ERR_AUTH);
        /* Other versions, the wrong key. */
        memcpy(bad, cell, n);
        bad[0] = 0x02;
        CHECK(decrypt_one(key, bad, n, out, &out_len) == EE_ERR_AUTH);
        CHECK(decrypt_one(wrong, cell, n, out, &out_len) == EE_ERR_AUTH);
    }
    /* Too short to be a cell at all, including empty. */
    for (size_t n = 0; n < 65; n++) {
        CHECK(decrypt_one(key, cell, n, out, &out_len) == EE_ERR_AUTH);
    }
    /* A correct MAC over ciphertext whose padding is wrong: pad byte 0, 17, and inconsistent. */
    uint8_t block[32];
    uint8_t pads[4] = {0, 17, 0xff, 5};
    for (int k = 0; k < 4; k++) {
        rng_fill(block, 32);
        block[31] = pads[k];
        if (pads[k] == 5) block[28] = 4; /* one byte inside the 5-byte pad differs */
        for (size_t blocks = 1; blocks <= 2; blocks++) {
            size_t n = oracle_cell(root, block + 32 - 16 * blocks, 16 * blocks, iv, 1, cell);
            CHECK(decrypt_one(key, cell, n, out, &out_len) == EE_ERR_AUTH);
        }
    }
    /* A full padding block (16 x 0x10) is valid: plaintext of exactly 16 bytes. */
    CHECK(ee_key_free(key) == EE_OK);
    CHECK(ee_key_free(wrong) == EE_OK);
}

static void test_failed_batch_wipes_output(void) {
    uint8_t root[32], iv[16], pt[8];
    rng_fill(root, 32);
    uint64_t key = 0;
    CHECK(ee_key_load(&key, root, 32) == EE_OK);
    enum { COUNT = 7 };
    uint8_t cells[COUNT * 65];
    int32_t offsets[COUNT + 1];
    for (int i = 0; i < COUNT; i++) {
        rng_fill(iv, 16);
        memset(pt, 0x41 + i, 8);
        oracle_cell(root, pt, 8, iv, 0, cells + 65 * i);
        offsets[i] = 65 * i;
    }
    offsets[COUNT] = 65 * COUNT;
    cells[65 * 5 + 40] ^= 1; /* row 5's IV */
    uint8_t out[COUNT * 16];
    int64_t out_offsets[COUNT + 1];
    size_t out_len = 0, failed = 0;
    memset(out, 0xee, sizeof out);
    CHECK(ee_cell_decrypt_batch(out, sizeof out, &out_len, out_offsets, COUNT + 1, &failed, key,
                                offsets, COUNT + 1, cells, sizeof cells, NULL, 0, 0,
                                COUNT) == EE_ERR_AUTH);
    CHECK(failed == 5);
    int all_zero = 1;
    for (size_t i = 0; i < sizeof out; i++) all_zero &= out[i] == 0;
    CHECK(all_zero);
    /* Two bad rows side by side (a MAC failure, then a bad version byte): the first is named. */
    cells[65 * 5 + 40] ^= 1;
    cells[65 * 2 + 40] ^= 1;
    cells[65 * 3] = 0x02;
    CHECK(ee_cell_decrypt_batch(out, sizeof out, &out_len, out_offsets, COUNT + 1, &failed, key,
                                offsets, COUNT + 1, cells, sizeof cells, NULL, 0, 0,
                                COUNT) == EE_ERR_AUTH);
    CHECK(failed == 2);
    CHECK(ee_key_free(key) == EE_OK);
}

static void test_key_ids_and_wipe(void) {
    uint8_t root[32];
    rng_fill(root, 32);
    uint64_t first = 0, second = 0;
    CHECK(ee_key_load(&first, root, 31) == EE_ERR_KEY_LENGTH);
    CHECK(ee_key_load(&first, root, 33) == EE_ERR_KEY_LENGTH);
    CHECK(ee_key_load(&first, root, 32) == EE_OK);
    size_t slot = ee_test_key_slot_of(first);
    size_t slot_len = 0;
    const uint8_t *bytes = ee_test_key_slot_bytes(slot, &slot_len);
    int nonzero = 0;
    for (size_t i = 0; i < slot_len; i++) nonzero |= bytes[i];
    CHECK(nonzero);
    CHECK(ee_key_free(first) == EE_OK);
    int any = 0;
    for (size_t i = 0; i < slot_len; i++) any |= bytes[i];
    CHECK(any == 0); /* freeing wiped the whole slot */
    CHECK(ee_key_free(first) == EE_ERR_KEY_ID);
    /* The slot is reused with a new generation; the stale id stays dead. */
    CHECK(ee_key_load(&second, root, 32) == EE_OK);
    CHECK(ee_test_key_slot_of(second) == slot);
    CHECK(second != first);
    uint8_t pt[4] = {1, 2, 3, 4}, out[80];
    int32_t offsets[2] = {0, 4};
    int64_t out_offsets[2];
    size_t out_len = 0;
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 2, first,
                                EE_CELL_DETERMINISTIC, offsets, 2, pt, 4, NULL, 0, 0, 1, NULL,
                                0) == EE_ERR_KEY_ID);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 2, 0,
                                EE_CELL_DETERMINISTIC, offsets, 2, pt, 4, NULL, 0, 0, 1, NULL,
                                0) == EE_ERR_KEY_ID);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 2, 0xffffffffffffull,
                                EE_CELL_DETERMINISTIC, offsets, 2, pt, 4, NULL, 0, 0, 1, NULL,
                                0) == EE_ERR_KEY_ID);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 2, second,
                                EE_CELL_DETERMINISTIC, offsets, 2, pt, 4, NULL, 0, 0, 1, NULL,
                                0) == EE_OK);
    CHECK(ee_key_free(second) == EE_OK);
    CHECK(ee_key_free(0) == EE_ERR_KEY_ID);
}

static void test_arguments_and_capacity(void) {
    uint8_t root[32], pt[40], out[400];
    rng_fill(root, 32);
    rng_fill(pt, 40);
    uint64_t key = 0;
    CHECK(ee_key_load(&key, root, 32) == EE_OK);
    int32_t offsets[3] = {0, 8, 40};
    int64_t out_offsets[3];
    size_t out_len = 0, failed = 0;
    /* Exact size works, one byte less is refused, as is a short offsets output. */
    size_t need = 65 + 97;
    CHECK(ee_cell_encrypt_batch(out, need, &out_len, out_offsets, 3, key, EE_CELL_DETERMINISTIC,
                                offsets, 3, pt, 40, NULL, 0, 0, 2, NULL, 0) == EE_OK);
    CHECK(out_len == need);
    CHECK(ee_cell_encrypt_batch(out, need - 1, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, offsets, 3, pt, 40, NULL, 0, 0, 2, NULL,
                                0) == EE_ERR_CAPACITY);
    CHECK(ee_cell_encrypt_batch(out, need, &out_len, out_offsets, 2, key, EE_CELL_DETERMINISTIC,
                                offsets, 3, pt, 40, NULL, 0, 0, 2, NULL, 0) == EE_ERR_CAPACITY);
    /* Decrypt needs sum(len - 49) = 16 + 48. */
    int32_t cell_offsets[3] = {0, 65, (int32_t)need};
    uint8_t plain[64];
    CHECK(ee_cell_decrypt_batch(plain, 64, &out_len, out_offsets, 3, &failed, key, cell_offsets,
                                3, out, need, NULL, 0, 0, 2) == EE_OK);
    CHECK(out_len == 40 && memcmp(plain, pt, 40) == 0);
    CHECK(ee_cell_decrypt_batch(plain, 63, &out_len, out_offsets, 3, &failed, key, cell_offsets,
                                3, out, need, NULL, 0, 0, 2) == EE_ERR_CAPACITY);
    /* Malformed inputs. */
    int32_t decreasing[3] = {0, 9, 8};
    int32_t beyond[3] = {0, 8, 41};
    int32_t negative[3] = {-1, 8, 40};
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, decreasing, 3, pt, 40, NULL, 0, 0, 2, NULL,
                                0) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, beyond, 3, pt, 40, NULL, 0, 0, 2, NULL,
                                0) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, negative, 3, pt, 40, NULL, 0, 0, 2, NULL,
                                0) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, offsets, 2, pt, 40, NULL, 0, 0, 2, NULL,
                                0) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key, 7, offsets, 3, pt,
                                40, NULL, 0, 0, 2, NULL, 0) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key, EE_CELL_GIVEN_IV,
                                offsets, 3, pt, 40, NULL, 0, 0, 2, pt, 16) == EE_ERR_ARGUMENT);
    uint8_t validity[1] = {0x3};
    CHECK(ee_cell_encrypt_batch(out, sizeof out, &out_len, out_offsets, 3, key,
                                EE_CELL_DETERMINISTIC, offsets, 3, pt, 40, validity, 1, 7, 2, NULL,
                                0) == EE_ERR_ARGUMENT); /* bitmap too short for bit offset 7 */
    CHECK(ee_cell_decrypt_batch(plain, 64, &out_len, out_offsets, 3, NULL, key, cell_offsets, 3,
                                out, need, NULL, 0, 0, 2) == EE_ERR_ARGUMENT);
    /* Empty batch. */
    int32_t zero[1] = {0};
    CHECK(ee_cell_encrypt_batch(NULL, 0, &out_len, out_offsets, 1, key, EE_CELL_RANDOMIZED, zero, 1,
                                NULL, 0, NULL, 0, 0, 0, NULL, 0) == EE_OK);
    CHECK(out_len == 0 && out_offsets[0] == 0);
    CHECK(ee_key_free(key) == EE_OK);
}

static void test_randomized_differs(void) {
    uint8_t root[32], pt[8] = {0}, a[65], b[65];
    rng_fill(root, 32);
    uint64_t key = 0;
    CHECK(ee_key_load(&key, root, 32) == EE_OK);
    int32_t offsets[2] = {0, 8};
    int64_t out_offsets[2];
    size_t out_len = 0;
    CHECK(ee_cell_encrypt_batch(a, 65, &out_len, out_offsets, 2, key, EE_CELL_RANDOMIZED, offsets,
                                2, pt, 8, NULL, 0, 0, 1, NULL, 0) == EE_OK);
    CHECK(ee_cell_encrypt_batch(b, 65, &out_len, out_offsets, 2, key, EE_CELL_RANDOMIZED, offsets,
                                2, pt, 8, NULL, 0, 0, 1, NULL, 0) == EE_OK);
    CHECK(memcmp(a + 33, b + 33, 16) != 0);
    CHECK(ee_key_free(key) == EE_OK);
}

static void test_selection(void) {
    uint32_t flags = 0, version = 0;
    int32_t impl = 0;
    CHECK(ee_abi_version(&version) == EE_OK && version == EE_ABI_VERSION);
    CHECK(ee_cpu_features(&flags) == EE_OK);
    CHECK(ee_cell_select_impl(99) == EE_ERR_ARGUMENT);
    CHECK(ee_cell_select_impl(EE_IMPL_PORTABLE) == EE_OK);
    CHECK(ee_cell_current_impl(&impl) == EE_OK && impl == EE_IMPL_PORTABLE);
    ee_status fast = ee_cell_select_impl(EE_IMPL_FAST);
    CHECK(fast == (ee_cpu_fast_supported() ? EE_OK : EE_ERR_UNSUPPORTED));
    CHECK(ee_cell_select_impl(EE_IMPL_AUTO) == EE_OK);
    CHECK(ee_cell_current_impl(&impl) == EE_OK && impl != EE_IMPL_AUTO);
}

int main(void) {
    int32_t impls[2] = {EE_IMPL_PORTABLE, EE_IMPL_FAST};
    test_derive_matches_oracle();
    test_key_ids_and_wipe();
    test_selection();
    for (int i = 0; i < 2; i++) {
        if (ee_cell_select_impl(impls[i]) != EE_OK) {
            printf("skip %s: this CPU lacks AES-NI or SHA-NI\n", impl_name(impls[i]));
            continue;
        }
        int before = test_failures;
        for (int rep = 0; rep < 3; rep++) {
            test_roundtrip_against_oracle(EE_CELL_DETERMINISTIC, rep > 0);
            test_roundtrip_against_oracle(EE_CELL_GIVEN_IV, rep > 0);
            test_roundtrip_against_oracle(EE_CELL_RANDOMIZED, rep > 0);
        }
        test_tampering();
        test_failed_batch_wipes_output();
        test_arguments_and_capacity();
        test_randomized_differs();
        printf("%s: %s\n", impl_name(impls[i]), test_failures == before ? "ok" : "FAILED");
    }
    if (ee_cell_select_impl(EE_IMPL_AUTO) != EE_OK) test_failures++;
    printf("%d failure(s)\n", test_failures);
    return test_failures == 0 ? 0 : 1;
}

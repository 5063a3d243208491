/* cell_fast.c: the fast cell codec, with AES-NI for AES-256 and SHA-NI for HMAC-SHA256.
 *
 * It must produce exactly the bytes of cell_portable.c and is only ever called after cpu.c has
 * confirmed AES-NI, SHA-NI, SSSE3 and SSE4.1: this whole file is compiled for those extensions.
 * It must never write a cell's plaintext before that cell's MAC is verified.
 */
#include <string.h>

#include "cell_internal.h"

#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("aes,sha,sse4.1,ssse3"))), apply_to = function)
#else
#pragma GCC target("aes,sha,sse4.1,ssse3")
#endif

#include <immintrin.h>

/* How many cells move through the SHA and AES pipelines side by side. SHA256RNDS2 and AESDEC
 * have latencies of several cycles but can issue more often, so one cell alone leaves most issue
 * slots idle; two independent cells fill them. More lanes spill the 16 XMM registers, since each
 * lane keeps 2 state + 4 message schedule vectors live. Measured on an AMD EPYC (Zen 4), 8-byte
 * cells, decrypt+verify: 1 lane 9.5, 2 lanes 12.3, 3 lanes 9.6, 4 lanes 10.6 M cells/s. */
#define LANES 2
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* ---- SHA-256 with SHA-NI ---------------------------------------------------------------------
 *
 * SHA256RNDS2 runs two rounds. It wants the eight state words split as ABEF and CDGH (A in the
 * top lane), and the two round inputs W[t] + K[t] in the low two lanes of its third operand.
 * SHA256MSG1 and SHA256MSG2 compute the message schedule four words at a time:
 *   W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]
 * MSG1(W[t-16..t-13], W[t-12..t-9]) adds the s0 terms; adding the W[t-7..t-4] window (an ALIGNR
 * of the previous two vectors by one word) and MSG2 with W[t-4..t-1] adds the s1 terms.
 * A 64-round block is 16 groups of four rounds; group g consumes the schedule vector m[g % 4],
 * and in the same group the vector for g + 1 is finished (MSG2) and the one for g + 3 started
 * (MSG1), which keeps all four vectors in registers. */

typedef struct sha_state {
    __m128i abef;
    __m128i cdgh;
} sha_state;

static const uint32_t K256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

/* SHA-256 reads its input as big-endian words: reverse the bytes inside each 32-bit lane. The
 * shuffle is its own inverse, so it also turns digest words back into big-endian bytes. */
static ALWAYS_INLINE __m128i byteswap32(__m128i v) {
    return _mm_shuffle_epi8(v, _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
}

/* Words h[0..7] = A..H in memory order -> ABEF / CDGH. */
static ALWAYS_INLINE sha_state sha_from_words(const uint32_t *h) {
    __m128i abcd = _mm_loadu_si128((const __m128i *)h);       /* lanes 0..3 = A B C D */
    __m128i efgh = _mm_loadu_si128((const __m128i *)(h + 4)); /* lanes 0..3 = E F G H */
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);             /* B A D C */
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);             /* H G F E */
    sha_state s;
    s.abef = _mm_alignr_epi8(badc, hgfe, 8);     /* F E B A: A in the top lane */
    s.cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);  /* H G D C */
    return s;
}

/* ABEF / CDGH -> digest words in lane order (A B C D) and (E F G H). */
static ALWAYS_INLINE void sha_to_words(sha_state s, __m128i *abcd, __m128i *efgh) {
    __m128i abef = _mm_shuffle_epi32(s.abef, 0x1B); /* A B E F */
    __m128i ghcd = _mm_shuffle_epi32(s.cdgh, 0xB1); /* G H C D */
    *abcd = _mm_blend_epi16(abef, ghcd, 0xF0);
    *efgh = _mm_alignr_epi8(ghcd, abef, 8);
}

/* One compression per lane; m[l][0..3] hold block l's 16 words (already byte-swapped). The
 * lanes are independent, so their instruction streams interleave and hide each other's latency.
 * `lanes` is a constant at every call site, so the loops unroll into straight-line code. */
static ALWAYS_INLINE void sha_compress(sha_state *s, __m128i (*m)[4], int lanes) {
    sha_state saved[LANES];
    for (int l = 0; l < lanes; l++) saved[l] = s[l];
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        __m128i k = _mm_load_si128((const __m128i *)&K256[4 * g]);
        __m128i wk[LANES];
        for (int l = 0; l < lanes; l++) {
            wk[l] = _mm_add_epi32(m[l][g & 3], k);
            s[l].cdgh = _mm_sha256rnds2_epu32(s[l].cdgh, s[l].abef, wk[l]);
        }
        if (g >= 3 && g <= 14) {
            for (int l = 0; l < lanes; l++) {
                __m128i window = _mm_alignr_epi8(m[l][g & 3], m[l][(g - 1) & 3], 4);
                __m128i partial = _mm_add_epi32(m[l][(g + 1) & 3], window);
                m[l][(g + 1) & 3] = _mm_sha256msg2_epu32(partial, m[l][g & 3]);
            }
        }
        for (int l = 0; l < lanes; l++) {
            wk[l] = _mm_shuffle_epi32(wk[l], 0x0E); /* rounds 3 and 4 of the group */
            s[l].abef = _mm_sha256rnds2_epu32(s[l].abef, s[l].cdgh, wk[l]);
        }
        if (g >= 1 && g <= 12) {
            for (int l = 0; l < lanes; l++) {
                m[l][(g - 1) & 3] = _mm_sha256msg1_epu32(m[l][(g - 1) & 3], m[l][g & 3]);
            }
        }
    }
    for (int l = 0; l < lanes; l++) {
        s[l].abef = _mm_add_epi32(s[l].abef, saved[l].abef);
        s[l].cdgh = _mm_add_epi32(s[l].cdgh, saved[l].cdgh);
    }
}

static ALWAYS_INLINE void load_block(__m128i m[4], const uint8_t *block) {
    for (int i = 0; i < 4; i++) {
        m[i] = byteswap32(_mm_loadu_si128((const __m128i *)(block + 16 * i)));
    }
}

/* The outer HMAC hash sees exactly one block after its midstate: the 32-byte inner digest,
 * the 0x80 terminator and the bit length of opad block + digest, (64 + 32) * 8 = 768. The inner
 * digest words feed the schedule directly, skipping a round trip through bytes. */
static ALWAYS_INLINE void hmac_outer(sha_state *s, const sha_state outer_mid, const __m128i *abcd,
                                     const __m128i *efgh, int lanes) {
    __m128i m[LANES][4];
    for (int l = 0; l < lanes; l++) {
        s[l] = outer_mid;
        m[l][0] = abcd[l];
        m[l][1] = efgh[l];
        m[l][2] = _mm_set_epi32(0, 0, 0, (int)0x80000000u);
        m[l][3] = _mm_set_epi32(768, 0, 0, 0);
    }
    sha_compress(s, m, lanes);
}

/* A streaming SHA-256 over the SHA-NI compression, for messages of any length. */
typedef struct fast_sha {
    sha_state s;
    uint8_t buf[64];
    size_t buf_len;
    uint64_t total;
} fast_sha;

static void fast_sha_start(fast_sha *f, const SHA256_CTX *midstate) {
    f->s = sha_from_words(midstate->h);
    f->buf_len = 0;
    f->total = 64; /* the key block already absorbed into the midstate */
}

static void fast_sha_block(fast_sha *f, const uint8_t *block) {
    __m128i m[1][4];
    load_block(m[0], block);
    sha_compress(&f->s, m, 1);
}

static void fast_sha_update(fast_sha *f, const uint8_t *p, size_t n) {
    f->total += n;
    if (f->buf_len > 0) {
        size_t take = 64 - f->buf_len < n ? 64 - f->buf_len : n;
        memcpy(f->buf + f->buf_len, p, take);
        f->buf_len += take;
        p += take;
        n -= take;
        if (f->buf_len < 64) {
            return;
        }
        fast_sha_block(f, f->buf);
        f->buf_len = 0;
    }
    for (; n >= 64; p += 64, n -= 64) {
        fast_sha_block(f, p);
    }
    if (n > 0) {
        memcpy(f->buf, p, n);
        f->buf_len = n;
    }
}

static void fast_sha_final(fast_sha *f, __m128i *abcd, __m128i *efgh) {
    uint64_t bits = f->total * 8;
    f->buf[f->buf_len++] = 0x80;
    if (f->buf_len > 56) {
        memset(f->buf + f->buf_len, 0, 64 - f->buf_len);
        fast_sha_block(f, f->buf);
        f->buf_len = 0;
    }
    memset(f->buf + f->buf_len, 0, 56 - f->buf_len);
    for (int i = 0; i < 8; i++) {
        f->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    fast_sha_block(f, f->buf);
    sha_to_words(f->s, abcd, efgh);
    ee_wipe(f, sizeof *f);
}

/* ---- AES-256 with AES-NI ---------------------------------------------------------------------
 *
 * Key expansion (FIPS-197 5.2) for Nk = 8 produces round keys two at a time. AESKEYGENASSIST
 * computes SubWord(RotWord(w)) ^ rcon for word 3 of its input (lane 3 of the result) and plain
 * SubWord(w) (lane 2). Even round keys use the rotated form of the previous odd key's last word
 * (broadcast lane 3); odd round keys use SubWord of the previous even key's last word with no
 * rotation and no rcon (broadcast lane 2). The prefix XOR w0, w0^w1, w0^w1^w2, ... over the
 * previous key of the same parity is three shift-by-one-word XORs. */

static ALWAYS_INLINE __m128i expand_mix(__m128i previous, __m128i assist) {
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    previous = _mm_xor_si128(previous, _mm_slli_si128(previous, 4));
    return _mm_xor_si128(previous, assist);
}

#define EXPAND_EVEN(rk, i, rcon)                                                               \
    rk[i] = expand_mix(rk[(i) - 2],                                                            \
                       _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[(i) - 1], rcon), 0xFF))
#define EXPAND_ODD(rk, i)                                                                      \
    rk[i] = expand_mix(rk[(i) - 2],                                                            \
                       _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[(i) - 1], 0), 0xAA))

void ee_fast_prepare(ee_cell_keys *keys) {
    __m128i rk[15];
    rk[0] = _mm_loadu_si128((const __m128i *)keys->enc_key);
    rk[1] = _mm_loadu_si128((const __m128i *)(keys->enc_key + 16));
    EXPAND_EVEN(rk, 2, 0x01);
    EXPAND_ODD(rk, 3);
    EXPAND_EVEN(rk, 4, 0x02);
    EXPAND_ODD(rk, 5);
    EXPAND_EVEN(rk, 6, 0x04);
    EXPAND_ODD(rk, 7);
    EXPAND_EVEN(rk, 8, 0x08);
    EXPAND_ODD(rk, 9);
    EXPAND_EVEN(rk, 10, 0x10);
    EXPAND_ODD(rk, 11);
    EXPAND_EVEN(rk, 12, 0x20);
    EXPAND_ODD(rk, 13);
    EXPAND_EVEN(rk, 14, 0x40);
    /* AESDEC implements the "equivalent inverse cipher" (FIPS-197 5.3.5), whose middle round keys
     * are InvMixColumns of the encryption keys, taken in reverse order. */
    __m128i *enc = (__m128i *)keys->fast_encrypt_rounds;
    __m128i *dec = (__m128i *)keys->fast_decrypt_rounds;
    for (int i = 0; i < 15; i++) {
        _mm_store_si128(enc + i, rk[i]);
    }
    _mm_store_si128(dec, rk[14]);
    for (int i = 1; i < 14; i++) {
        _mm_store_si128(dec + i, _mm_aesimc_si128(rk[14 - i]));
    }
    _mm_store_si128(dec + 14, rk[0]);
    keys->fast_ready = 1;
    ee_wipe(rk, sizeof rk);
}

/* n independent blocks through all 14 rounds, round-major so the n AESENC/AESDEC chains
 * overlap. Decryption runs on a local copy (n at most AES_MAX_BLOCKS), its block loop unrolled
 * for the constant n of each call site, so the blocks stay in registers between rounds: working
 * on b[] itself, which the compiler must assume may alias the round keys, stored and reloaded
 * every block of every round (measured: the SF 1 range filter over 2-block DECIMAL cells went
 * from about 300 to 265 ms). Encryption measured no better that way. */
#define AES_MAX_BLOCKS 8

static ALWAYS_INLINE void aes_encrypt_blocks(const __m128i *rk, __m128i *b, int n) {
    for (int j = 0; j < n; j++) b[j] = _mm_xor_si128(b[j], rk[0]);
    for (int r = 1; r < 14; r++) {
        for (int j = 0; j < n; j++) b[j] = _mm_aesenc_si128(b[j], rk[r]);
    }
    for (int j = 0; j < n; j++) b[j] = _mm_aesenclast_si128(b[j], rk[14]);
}

static ALWAYS_INLINE void aes_decrypt_blocks(const __m128i *dk, __m128i *b, int n) {
    __m128i x[AES_MAX_BLOCKS];
#pragma GCC unroll 8
    for (int j = 0; j < n; j++) x[j] = _mm_xor_si128(b[j], dk[0]);
    for (int r = 1; r < 14; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < n; j++) x[j] = _mm_aesdec_si128(x[j], dk[r]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < n; j++) b[j] = _mm_aesdeclast_si128(x[j], dk[14]);
}

/* ---- Shared per-batch context ----------------------------------------------------------------- */

typedef struct fast_ctx {
    const ee_cell_keys *keys;
    __m128i rk[15];
    __m128i dk[15];
    sha_state mac_inner;
    sha_state mac_outer;
    sha_state iv_inner;
    sha_state iv_outer;
} fast_ctx;

static void fast_ctx_init(fast_ctx *c, const ee_cell_keys *keys) {
    c->keys = keys;
    for (int i = 0; i < 15; i++) {
        c->rk[i] = _mm_load_si128((const __m128i *)keys->fast_encrypt_rounds + i);
        c->dk[i] = _mm_load_si128((const __m128i *)keys->fast_decrypt_rounds + i);
    }
    c->mac_inner = sha_from_words(keys->mac_inner.h);
    c->mac_outer = sha_from_words(keys->mac_outer.h);
    c->iv_inner = sha_from_words(keys->iv_inner.h);
    c->iv_outer = sha_from_words(keys->iv_outer.h);
}

/* ---- MAC ---------------------------------------------------------------------------------------
 *
 * The MAC message is version || IV || ct || 0x01 (spec 1.3): 18 + ct_len bytes. In the cell, IV
 * and ct are contiguous at offset 33, so the message is cell[0], then cell[33 .. 49 + ct_len),
 * then the byte 0x01. For ct_len 16 or 32 (plaintexts under 32 bytes) message, 0x80 terminator
 * and 8-byte length fit one 64-byte block: the "short" cells that take the lane-parallel path. */

static ALWAYS_INLINE int is_short_ct(size_t ct_len) { return ct_len == 16 || ct_len == 32; }

/* The MAC block of a short cell as schedule words, built in registers from loads of the cell
 * (never past its last byte). Assembling it in a stack buffer first, byte by byte, and loading
 * it back stalled every load on store forwarding. Two layouts, for the two callers:
 *  - a stored cell (decryption): three or four loads, the first starting on the MAC's last
 *    byte, which the version byte replaces;
 *  - a cell this thread just wrote (encryption): loads exactly where the encryptor's 16-byte
 *    stores went (iv + 16k), shifted up one byte with PALIGNR, since a load that straddles two
 *    pending stores stalls the same way.
 * Measured on 8-byte cells, one thread: decrypt+verify 15.8 -> 18.8 M cells/s with the first
 * (17.3 with the second); encryption slowed by a quarter with the first, not with the second. */
static ALWAYS_INLINE void short_mac_words(__m128i m[4], const uint8_t *cell, size_t ct_len,
                                          int just_written) {
    const __m128i *iv = (const __m128i *)(cell + EE_CELL_IV_OFFSET);
    const uint8_t *ivb = cell + EE_CELL_IV_OFFSET;
    /* After the message: 0x01 (the version length), the 0x80 terminator, and the big-endian bit
     * count of ipad block + message, (64 + 18 + ct_len) * 8: 784 (0x0310) or 912 (0x0390), at
     * block bytes 62-63. */
    __m128i end = _mm_cvtsi32_si128(0x8001);
    if (!just_written) {
        __m128i head = _mm_loadu_si128((const __m128i *)(ivb - 1));
        m[0] = byteswap32(_mm_insert_epi8(head, cell[0], 0));
        m[1] = byteswap32(_mm_loadu_si128((const __m128i *)(ivb + 15)));
        if (ct_len == 16) {
            m[2] = byteswap32(_mm_insert_epi8(_mm_slli_si128(end, 1), ivb[31], 0));
            m[3] = byteswap32(_mm_insert_epi16(_mm_setzero_si128(), 0x1003, 7));
        } else {
            m[2] = byteswap32(_mm_loadu_si128((const __m128i *)(ivb + 31)));
            __m128i tail = _mm_insert_epi16(_mm_slli_si128(end, 1), 0x9003, 7);
            m[3] = byteswap32(_mm_insert_epi8(tail, ivb[47], 0));
        }
        return;
    }
    __m128i version = _mm_slli_si128(_mm_cvtsi32_si128(cell[0]), 15);
    __m128i b0 = _mm_loadu_si128(iv), b1 = _mm_loadu_si128(iv + 1);
    m[0] = byteswap32(_mm_alignr_epi8(b0, version, 15));
    m[1] = byteswap32(_mm_alignr_epi8(b1, b0, 15));
    if (ct_len == 16) {
        m[2] = byteswap32(_mm_alignr_epi8(end, b1, 15));
        m[3] = byteswap32(_mm_insert_epi16(_mm_setzero_si128(), 0x1003, 7));
    } else {
        __m128i b2 = _mm_loadu_si128(iv + 2);
        m[2] = byteswap32(_mm_alignr_epi8(b2, b1, 15));
        /* Laid out one byte down, as PALIGNR shifts it up. */
        __m128i tail = _mm_insert_epi8(_mm_insert_epi8(end, 0x03, 13), 0x90, 14);
        m[3] = byteswap32(_mm_alignr_epi8(tail, b2, 15));
    }
}

/* MACs of `lanes` short cells, as digest words. */
static ALWAYS_INLINE void short_macs(const fast_ctx *c, const uint8_t *const *cells,
                                     const size_t *ct_lens, __m128i *abcd, __m128i *efgh,
                                     int lanes, int just_written) {
    __m128i m[LANES][4];
    sha_state s[LANES];
    for (int l = 0; l < lanes; l++) {
        short_mac_words(m[l], cells[l], ct_lens[l], just_written);
        s[l] = c->mac_inner;
    }
    sha_compress(s, m, lanes);
    for (int l = 0; l < lanes; l++) sha_to_words(s[l], &abcd[l], &efgh[l]);
    hmac_outer(s, c->mac_outer, abcd, efgh, lanes);
    for (int l = 0; l < lanes; l++) sha_to_words(s[l], &abcd[l], &efgh[l]);
}

static void generic_mac(const fast_ctx *c, const uint8_t *cell, size_t ct_len, __m128i *abcd,
                        __m128i *efgh) {
    static const uint8_t version_length = 0x01;
    fast_sha f;
    sha_state s;
    fast_sha_start(&f, &c->keys->mac_inner);
    fast_sha_update(&f, cell, 1);
    fast_sha_update(&f, cell + EE_CELL_IV_OFFSET, 16 + ct_len);
    fast_sha_update(&f, &version_length, 1);
    fast_sha_final(&f, abcd, efgh);
    hmac_outer(&s, c->mac_outer, abcd, efgh, 1);
    sha_to_words(s, abcd, efgh);
}

/* Constant-time tag comparison: XOR the stored tag against the computed words, OR the halves,
 * and test the result for zero in one instruction. No branch depends on where bytes differ. */
static ALWAYS_INLINE int tag_matches(const uint8_t *tag, __m128i abcd, __m128i efgh) {
    __m128i t0 = byteswap32(_mm_loadu_si128((const __m128i *)tag));
    __m128i t1 = byteswap32(_mm_loadu_si128((const __m128i *)(tag + 16)));
    __m128i diff = _mm_or_si128(_mm_xor_si128(t0, abcd), _mm_xor_si128(t1, efgh));
    return _mm_testz_si128(diff, diff);
}

static ALWAYS_INLINE void store_tag(uint8_t *tag, __m128i abcd, __m128i efgh) {
    _mm_storeu_si128((__m128i *)tag, byteswap32(abcd));
    _mm_storeu_si128((__m128i *)(tag + 16), byteswap32(efgh));
}

/* ---- Decryption ------------------------------------------------------------------------------- */

/* CBC decryption of n blocks, four at a time: every block's AES is independent (P[i] =
 * D(C[i]) ^ C[i-1]), so four AESDEC chains overlap. */
static void cbc_decrypt(const fast_ctx *c, const uint8_t *iv, const uint8_t *ct, size_t blocks,
                        uint8_t *out) {
    __m128i previous = _mm_loadu_si128((const __m128i *)iv);
    size_t i = 0;
    for (; i + 4 <= blocks; i += 4) {
        __m128i b[4], in[4];
        for (int j = 0; j < 4; j++) in[j] = b[j] = _mm_loadu_si128((const __m128i *)ct + i + j);
        aes_decrypt_blocks(c->dk, b, 4);
        _mm_storeu_si128((__m128i *)out + i, _mm_xor_si128(b[0], previous));
        for (int j = 1; j < 4; j++) {
            _mm_storeu_si128((__m128i *)out + i + j, _mm_xor_si128(b[j], in[j - 1]));
        }
        previous = in[3];
    }
    for (; i < blocks; i++) {
        __m128i in = _mm_loadu_si128((const __m128i *)ct + i);
        __m128i b[1] = {in};
        aes_decrypt_blocks(c->dk, b, 1);
        _mm_storeu_si128((__m128i *)out + i, _mm_xor_si128(b[0], previous));
        previous = in;
    }
}

/* Any-length cell: verify, then decrypt into out, then check padding (wiping out on failure). */
static ee_status generic_decrypt(const fast_ctx *c, const uint8_t *cell, size_t cell_len,
                                 uint8_t *out, size_t *pt_len) {
    __m128i abcd, efgh;
    size_t pad = 0;
    if (cell_len < EE_CELL_MIN_LEN || (cell_len - EE_CELL_OVERHEAD) % 16 != 0 ||
        cell[0] != EE_CELL_VERSION_BYTE) {
        return EE_ERR_AUTH;
    }
    size_t ct_len = cell_len - EE_CELL_OVERHEAD;
    generic_mac(c, cell, ct_len, &abcd, &efgh);
    if (!tag_matches(cell + EE_CELL_MAC_OFFSET, abcd, efgh)) {
        return EE_ERR_AUTH;
    }
    cbc_decrypt(c, cell + EE_CELL_IV_OFFSET, cell + EE_CELL_CT_OFFSET, ct_len / 16, out);
    if (!ee_pkcs7_check(out + ct_len - 16, &pad)) {
        ee_wipe(out, ct_len);
        return EE_ERR_AUTH;
    }
    *pt_len = ct_len - pad;
    return EE_OK;
}

/* The plaintext scratch of short_decrypt. The batch owns it and wipes it once, when it ends:
 * every group overwrites the same bytes, and a wipe per group (two OPENSSL_cleanse calls a pair
 * of cells) was 2% of the CPU time of a Q6 scan. */
typedef struct {
    __m128i blocks[2 * LANES];
    uint8_t plain[LANES][32];
} short_scratch;

/* `lanes` consecutive short cells (65 or 81 bytes). Verifies every MAC first; only then
 * decrypts, into the batch's scratch, which is checked for padding before anything reaches
 * out. */
static ALWAYS_INLINE ee_status short_decrypt(const fast_ctx *c, const uint8_t *const *cells,
                                             const size_t *cell_lens, int lanes, uint8_t *out,
                                             size_t *pos, int64_t *offsets_after,
                                             int *failed_lane, short_scratch *scratch) {
    size_t ct_lens[LANES];
    __m128i abcd[LANES], efgh[LANES];
    __m128i *blocks = scratch->blocks;
    uint8_t(*plain)[32] = scratch->plain;
    int bad = 0;
    int authentic[LANES];
    for (int l = 0; l < lanes; l++) {
        ct_lens[l] = cell_lens[l] - EE_CELL_OVERHEAD;
        authentic[l] = cells[l][0] == EE_CELL_VERSION_BYTE;
    }
    /* MACs are computed for every lane, even one with a bad version byte, so that the first
     * failing lane, in row order, is the one reported. */
    short_macs(c, cells, ct_lens, abcd, efgh, lanes, 0);
    for (int l = 0; l < lanes; l++) {
        authentic[l] &= tag_matches(cells[l] + EE_CELL_MAC_OFFSET, abcd[l], efgh[l]);
    }
    for (int l = 0; l < lanes; l++) {
        if (!authentic[l]) {
            *failed_lane = l;
            return EE_ERR_AUTH;
        }
    }
    /* Gather every ciphertext block of the group and run them through AES together. */
    int n = 0;
    for (int l = 0; l < lanes; l++) {
        for (size_t b = 0; b < ct_lens[l] / 16; b++) {
            blocks[n++] = _mm_loadu_si128((const __m128i *)(cells[l] + EE_CELL_CT_OFFSET) + b);
        }
    }
    if (n == 2 * lanes) {
        aes_decrypt_blocks(c->dk, blocks, 2 * lanes);
    } else if (n == lanes) {
        aes_decrypt_blocks(c->dk, blocks, lanes);
    } else {
        for (int j = 0; j < n; j++) aes_decrypt_blocks(c->dk, blocks + j, 1);
    }
    n = 0;
    for (int l = 0; l < lanes; l++) {
        /* CBC chaining: block 0 XORs the IV, block 1 XORs ciphertext block 0. */
        const __m128i *chain = (const __m128i *)(cells[l] + EE_CELL_IV_OFFSET);
        for (size_t b = 0; b < ct_lens[l] / 16; b++) {
            __m128i p = _mm_xor_si128(blocks[n++], _mm_loadu_si128(chain + b));
            _mm_storeu_si128((__m128i *)plain[l] + b, p);
        }
    }
    size_t pads[LANES];
    for (int l = 0; l < lanes; l++) {
        if (!ee_pkcs7_check(plain[l] + ct_lens[l] - 16, &pads[l]) && !bad) {
            bad = 1;
            *failed_lane = l;
        }
    }
    if (bad) {
        return EE_ERR_AUTH;
    }
    for (int l = 0; l < lanes; l++) {
        size_t pt_len = ct_lens[l] - pads[l];
        memcpy(out + *pos, plain[l], pt_len);
        *pos += pt_len;
        offsets_after[l] = (int64_t)*pos;
    }
    return EE_OK;
}

ee_status ee_fast_decrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, uint8_t *out_data,
                               size_t out_data_cap, int64_t *out_offsets, size_t *failed_row) {
    ee_status status = EE_OK;
    fast_ctx c;
    short_scratch scratch;
    const uint8_t *cells[LANES] = {NULL};
    size_t lens[LANES] = {0};
    size_t first = 0; /* row of cells[0] */
    int pending = 0;
    int failed_lane = 0;
    size_t pos = 0;
    (void)out_data_cap; /* the batch layer checked that every cell fits */
    fast_ctx_init(&c, keys);
    out_offsets[0] = 0;
    for (size_t row = 0; row <= rows->count; row++) {
        int valid = 0;
        size_t len = 0;
        const uint8_t *cell = NULL;
        if (row < rows->count && (valid = ee_row_valid(rows, row))) {
            cell = ee_row_bytes(rows, row, &len);
            if (len >= EE_CELL_OVERHEAD && is_short_ct(len - EE_CELL_OVERHEAD)) {
                if (pending == 0) first = row;
                cells[pending] = cell;
                lens[pending++] = len;
                if (pending == LANES) {
                    status = short_decrypt(&c, cells, lens, LANES, out_data, &pos,
                                           out_offsets + first + 1, &failed_lane, &scratch);
                    if (status != EE_OK) {
                        *failed_row = first + (size_t)failed_lane;
                        goto done;
                    }
                    pending = 0;
                }
                continue;
            }
        }
        /* Any other row ends the run of short cells: finish those first, in row order. */
        for (int l = 0; l < pending; l++) {
            status = short_decrypt(&c, cells + l, lens + l, 1, out_data, &pos,
                                   out_offsets + first + l + 1, &failed_lane, &scratch);
            if (status != EE_OK) {
                *failed_row = first + (size_t)l;
                goto done;
            }
        }
        pending = 0;
        if (row == rows->count) {
            break;
        }
        if (valid) {
            size_t pt_len = 0;
            status = generic_decrypt(&c, cell, len, out_data + pos, &pt_len);
            if (status != EE_OK) {
                *failed_row = row;
                goto done;
            }
            pos += pt_len;
        }
        out_offsets[row + 1] = (int64_t)pos;
    }
done:
    ee_wipe(&scratch, sizeof scratch);
    ee_wipe(&c, sizeof c);
    return status;
}

/* ---- Encryption ------------------------------------------------------------------------------- */

/* IVs of `lanes` short plaintexts (under 32 bytes): HMAC(iv_key, pt)[0:16]. Plaintext, 0x80 and
 * the length fit one block whenever the plaintext is under 56 bytes. */
static ALWAYS_INLINE void short_ivs(const fast_ctx *c, const uint8_t *const *pts,
                                    const size_t *pt_lens, __m128i *ivs, int lanes) {
    uint8_t block[LANES][64];
    __m128i m[LANES][4];
    sha_state s[LANES];
    __m128i abcd[LANES], efgh[LANES];
    for (int l = 0; l < lanes; l++) {
        memset(block[l], 0, 64);
        memcpy(block[l], pts[l], pt_lens[l]);
        block[l][pt_lens[l]] = 0x80;
        uint64_t bits = (64 + (uint64_t)pt_lens[l]) * 8;
        block[l][62] = (uint8_t)(bits >> 8);
        block[l][63] = (uint8_t)bits;
        load_block(m[l], block[l]);
        s[l] = c->iv_inner;
    }
    sha_compress(s, m, lanes);
    for (int l = 0; l < lanes; l++) sha_to_words(s[l], &abcd[l], &efgh[l]);
    hmac_outer(s, c->iv_outer, abcd, efgh, lanes);
    for (int l = 0; l < lanes; l++) {
        sha_to_words(s[l], &abcd[l], &efgh[l]);
        ivs[l] = byteswap32(abcd[l]); /* the first 16 digest bytes */
    }
    /* Everything here was computed from plaintext; leave none of it on the stack. */
    ee_wipe(block, sizeof block);
    ee_wipe(m, sizeof m);
    ee_wipe(s, sizeof s);
    ee_wipe(abcd, sizeof abcd);
    ee_wipe(efgh, sizeof efgh);
}

static void generic_iv(const fast_ctx *c, const uint8_t *pt, size_t pt_len, __m128i *iv) {
    fast_sha f;
    sha_state s;
    __m128i abcd, efgh;
    fast_sha_start(&f, &c->keys->iv_inner);
    fast_sha_update(&f, pt, pt_len);
    fast_sha_final(&f, &abcd, &efgh);
    hmac_outer(&s, c->iv_outer, &abcd, &efgh, 1);
    sha_to_words(s, &abcd, &efgh);
    *iv = byteswap32(abcd);
    ee_wipe(&s, sizeof s);
    ee_wipe(&abcd, sizeof abcd);
    ee_wipe(&efgh, sizeof efgh);
}

/* PKCS#7: the final block holds the tail of the plaintext and 1..16 bytes of value pad. */
static ALWAYS_INLINE __m128i padded_last_block(const uint8_t *pt, size_t pt_len) {
    uint8_t last[16];
    size_t full = pt_len / 16 * 16;
    size_t pad = 16 - (pt_len - full);
    memcpy(last, pt + full, pt_len - full);
    memset(last + (pt_len - full), (int)pad, pad);
    __m128i v = _mm_loadu_si128((const __m128i *)last);
    ee_wipe(last, sizeof last);
    return v;
}

static void generic_encrypt(const fast_ctx *c, const uint8_t *pt, size_t pt_len, __m128i iv,
                            uint8_t *cell) {
    __m128i abcd, efgh;
    size_t full_blocks = pt_len / 16;
    __m128i chain[1] = {iv};
    cell[0] = EE_CELL_VERSION_BYTE;
    _mm_storeu_si128((__m128i *)(cell + EE_CELL_IV_OFFSET), iv);
    /* CBC encryption is a chain within a cell: C[i] = E(P[i] ^ C[i-1]); no overlap possible. */
    for (size_t b = 0; b <= full_blocks; b++) {
        __m128i p = b < full_blocks ? _mm_loadu_si128((const __m128i *)pt + b)
                                    : padded_last_block(pt, pt_len);
        chain[0] = _mm_xor_si128(chain[0], p);
        aes_encrypt_blocks(c->rk, chain, 1);
        _mm_storeu_si128((__m128i *)(cell + EE_CELL_CT_OFFSET) + b, chain[0]);
    }
    generic_mac(c, cell, 16 * (full_blocks + 1), &abcd, &efgh);
    store_tag(cell + EE_CELL_MAC_OFFSET, abcd, efgh);
}

/* `lanes` short plaintexts (under 32 bytes) with their IVs: CBC across lanes in step, then MACs. */
static ALWAYS_INLINE void short_encrypt(const fast_ctx *c, const uint8_t *const *pts,
                                        const size_t *pt_lens, const __m128i *ivs, int lanes,
                                        uint8_t *const *cells) {
    __m128i state[LANES];
    size_t ct_lens[LANES];
    __m128i abcd[LANES], efgh[LANES];
    int two_blocks = 0;
    for (int l = 0; l < lanes; l++) {
        ct_lens[l] = 16 * (pt_lens[l] / 16 + 1);
        two_blocks |= ct_lens[l] == 32;
        __m128i first = pt_lens[l] >= 16 ? _mm_loadu_si128((const __m128i *)pts[l])
                                         : padded_last_block(pts[l], pt_lens[l]);
        state[l] = _mm_xor_si128(first, ivs[l]);
        cells[l][0] = EE_CELL_VERSION_BYTE;
        _mm_storeu_si128((__m128i *)(cells[l] + EE_CELL_IV_OFFSET), ivs[l]);
    }
    aes_encrypt_blocks(c->rk, state, lanes);
    for (int l = 0; l < lanes; l++) {
        _mm_storeu_si128((__m128i *)(cells[l] + EE_CELL_CT_OFFSET), state[l]);
    }
    if (two_blocks) {
        /* Lanes with one block run the second step on a dummy value that is never stored. */
        for (int l = 0; l < lanes; l++) {
            if (ct_lens[l] == 32) {
                state[l] = _mm_xor_si128(state[l], padded_last_block(pts[l], pt_lens[l]));
            }
        }
        aes_encrypt_blocks(c->rk, state, lanes);
        for (int l = 0; l < lanes; l++) {
            if (ct_lens[l] == 32) {
                _mm_storeu_si128((__m128i *)(cells[l] + EE_CELL_CT_OFFSET) + 1, state[l]);
            }
        }
    }
    short_macs(c, (const uint8_t *const *)cells, ct_lens, abcd, efgh, lanes, 1);
    for (int l = 0; l < lanes; l++) store_tag(cells[l] + EE_CELL_MAC_OFFSET, abcd[l], efgh[l]);
    ee_wipe(state, sizeof state);
}

/* Encrypts the pending run of short rows, LANES at a time where possible. */
static ALWAYS_INLINE void short_encrypt_run(const fast_ctx *c, const uint8_t *const *pts,
                                            const size_t *pt_lens, const uint8_t *given_ivs,
                                            int count, uint8_t *const *cells) {
    __m128i ivs[LANES];
    if (count == LANES) {
        if (given_ivs == NULL) {
            short_ivs(c, pts, pt_lens, ivs, LANES);
        } else {
            for (int l = 0; l < LANES; l++) {
                ivs[l] = _mm_loadu_si128((const __m128i *)(given_ivs + 16 * l));
            }
        }
        short_encrypt(c, pts, pt_lens, ivs, LANES, cells);
        return;
    }
    for (int l = 0; l < count; l++) {
        if (given_ivs == NULL) {
            short_ivs(c, pts + l, pt_lens + l, ivs, 1);
        } else {
            ivs[0] = _mm_loadu_si128((const __m128i *)(given_ivs + 16 * l));
        }
        short_encrypt(c, pts + l, pt_lens + l, ivs, 1, cells + l);
    }
}

ee_status ee_fast_encrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, const uint8_t *ivs,
                               uint8_t *out_data, int64_t *out_offsets) {
    fast_ctx c;
    const uint8_t *pts[LANES] = {NULL};
    size_t lens[LANES] = {0};
    uint8_t *cells[LANES] = {NULL};
    const uint8_t *run_ivs = NULL; /* the given IVs of the pending run */
    int pending = 0;
    size_t pos = 0;
    fast_ctx_init(&c, keys);
    out_offsets[0] = 0;
    for (size_t row = 0; row <= rows->count; row++) {
        int valid = 0;
        size_t len = 0;
        const uint8_t *pt = NULL;
        if (row < rows->count && (valid = ee_row_valid(rows, row))) {
            pt = ee_row_bytes(rows, row, &len);
            if (len < 32) {
                if (pending == 0) run_ivs = ivs;
                pts[pending] = pt;
                lens[pending] = len;
                cells[pending++] = out_data + pos;
                pos += ee_cell_len_for(len);
                out_offsets[row + 1] = (int64_t)pos;
                if (ivs != NULL) ivs += 16;
                if (pending == LANES) {
                    short_encrypt_run(&c, pts, lens, run_ivs, LANES, cells);
                    pending = 0;
                }
                continue;
            }
        }
        if (pending > 0) {
            short_encrypt_run(&c, pts, lens, run_ivs, pending, cells);
            pending = 0;
        }
        if (row == rows->count) {
            break;
        }
        if (valid) {
            __m128i iv;
            if (ivs != NULL) {
                iv = _mm_loadu_si128((const __m128i *)ivs);
                ivs += 16;
            } else {
                generic_iv(&c, pt, len, &iv);
            }
            generic_encrypt(&c, pt, len, iv, out_data + pos);
            pos += ee_cell_len_for(len);
        }
        out_offsets[row + 1] = (int64_t)pos;
    }
    ee_wipe(&c, sizeof c);
    return EE_OK;
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else /* not x86_64: the fast codec does not exist; cpu.c never reports it as supported. */

void ee_fast_prepare(ee_cell_keys *keys) { keys->fast_ready = 0; }

ee_status ee_fast_encrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, const uint8_t *ivs,
                               uint8_t *out_data, int64_t *out_offsets) {
    return ee_portable_encrypt_rows(keys, rows, ivs, out_data, out_offsets);
}

ee_status ee_fast_decrypt_rows(const ee_cell_keys *keys, const ee_rows *rows, uint8_t *out_data,
                               size_t out_data_cap, int64_t *out_offsets, size_t *failed_row) {
    return ee_portable_decrypt_rows(keys, rows, out_data, out_data_cap, out_offsets, failed_row);
}

#endif

/* value_order.c: the order of decrypted, normalized values, the LIKE matcher, and index sorting.
 *
 * It is pure computation on plaintext that the caller already verified and decrypted into
 * enclave scratch memory. It must not allocate, keep or copy values anywhere else, and it must
 * give the same answers DuckDB gives on the plaintext columns (enclave.h lists the orders).
 */
#include <math.h>
#include <string.h>

#include "enclave_internal.h"

int ee_type_known(int32_t type_code) {
    return type_code >= EE_TYPE_INT64 && type_code <= EE_TYPE_GUID;
}

size_t ee_type_fixed_len(int32_t type_code) {
    switch (type_code) {
    case EE_TYPE_INT64:
    case EE_TYPE_FLOAT64:
    case EE_TYPE_DATETIME2:
        return 8;
    case EE_TYPE_FLOAT32:
        return 4;
    case EE_TYPE_DATE:
        return 3;
    case EE_TYPE_TIME:
        return 5;
    case EE_TYPE_DATETIMEOFFSET:
        return 10;
    case EE_TYPE_GUID:
        return 16;
    default:
        return 0;
    }
}

int ee_value_well_formed(int32_t type_code, const uint8_t *value, size_t len) {
    size_t fixed = ee_type_fixed_len(type_code);
    if (fixed > 0) return len == fixed;
    switch (type_code) {
    case EE_TYPE_DECIMAL:
        /* sign byte (1 non-negative, 0 negative) + a little-endian magnitude of any length */
        return len >= 1 && value[0] <= 1;
    case EE_TYPE_UTF16LE:
        return len % 2 == 0;
    case EE_TYPE_UTF8:
    case EE_TYPE_BYTES:
        return 1;
    default:
        return 0;
    }
}

static int order(uint64_t a, uint64_t b) { return (a > b) - (a < b); }

/* DuckDB orders floats -inf < ... < +inf < NaN, with every NaN equal and -0.0 equal to 0.0. */
static int order_double(double a, double b) {
    int a_nan = isnan(a) != 0, b_nan = isnan(b) != 0;
    if (a_nan || b_nan) return a_nan - b_nan;
    return (a > b) - (a < b);
}

static double read_double(const uint8_t *p) {
    uint64_t bits = ee_le_bytes(p, 8);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

static double read_float(const uint8_t *p) {
    uint32_t bits = (uint32_t)ee_le_bytes(p, 4);
    float f;
    memcpy(&f, &bits, 4);
    return (double)f;
}

/* The magnitude's length without its high zero bytes. */
static size_t magnitude_len(const uint8_t *magnitude, size_t len) {
    while (len > 0 && magnitude[len - 1] == 0) len--;
    return len;
}

/* Decimals of one column share its scale, so the order is sign, then magnitude. A zero
 * magnitude is zero whatever its sign byte says. */
static int order_decimal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    size_t am = magnitude_len(a + 1, a_len - 1), bm = magnitude_len(b + 1, b_len - 1);
    int a_sign = am == 0 ? 0 : (a[0] == 1 ? 1 : -1);
    int b_sign = bm == 0 ? 0 : (b[0] == 1 ? 1 : -1);
    if (a_sign != b_sign) return (a_sign > b_sign) - (a_sign < b_sign);
    int mag = 0;
    if (am != bm) {
        mag = am > bm ? 1 : -1;
    } else {
        for (size_t i = am; i > 0 && mag == 0; i--) mag = order(a[i], b[i]);
    }
    return a_sign < 0 ? -mag : mag;
}

/* Eight bytes as one word, in memory order (one load; memcpy keeps it alignment-safe). */
static uint64_t word_at(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Eight bytes as a big-endian number, so that integer order is byte order. */
static uint64_t be_uint64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(word_at(p));
#else
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
#endif
}

/* memcmp order, then shorter first. Eight bytes at a time as big-endian words, whose integer
 * order is their byte order: short values (the usual case) then cost no library call. */
static int order_bytes(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    size_t n = a_len < b_len ? a_len : b_len, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = be_uint64(a + i), y = be_uint64(b + i);
        if (x != y) return order(x, y);
    }
    for (; i < n; i++) {
        if (a[i] != b[i]) return order(a[i], b[i]);
    }
    return order(a_len, b_len);
}

/* UTF-16 code unit order differs from code point order only where surrogates meet units
 * E000..FFFF: moving surrogates above every other unit restores code point order. */
static uint32_t utf16_rank(uint32_t unit) {
    if (unit < 0xd800) return unit;
    return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

static int order_utf16(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    size_t n = (a_len < b_len ? a_len : b_len) / 2;
    for (size_t i = 0; i < n; i++) {
        uint32_t ua = (uint32_t)a[2 * i] | ((uint32_t)a[2 * i + 1] << 8);
        uint32_t ub = (uint32_t)b[2 * i] | ((uint32_t)b[2 * i + 1] << 8);
        if (ua != ub) return order(utf16_rank(ua), utf16_rank(ub));
    }
    return order(a_len, b_len);
}

/* .NET stores a GUID's first three fields little-endian; DuckDB orders UUIDs by their canonical
 * (big-endian, textual) bytes, so compare in that byte order. */
static int order_guid(const uint8_t *a, const uint8_t *b) {
    static const uint8_t canonical[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 16; i++) {
        int c = order(a[canonical[i]], b[canonical[i]]);
        if (c != 0) return c;
    }
    return 0;
}

int ee_value_compare(int32_t type_code, const uint8_t *a, size_t a_len, const uint8_t *b,
                     size_t b_len) {
    switch (type_code) {
    case EE_TYPE_INT64: {
        int64_t x = (int64_t)ee_le_bytes(a, 8), y = (int64_t)ee_le_bytes(b, 8);
        return (x > y) - (x < y);
    }
    case EE_TYPE_FLOAT32:
        return order_double(read_float(a), read_float(b));
    case EE_TYPE_FLOAT64:
        return order_double(read_double(a), read_double(b));
    case EE_TYPE_DECIMAL:
        return order_decimal(a, a_len, b, b_len);
    case EE_TYPE_DATE:
        return order(ee_le_bytes(a, 3), ee_le_bytes(b, 3));
    case EE_TYPE_TIME:
        return order(ee_le_bytes(a, 5), ee_le_bytes(b, 5));
    case EE_TYPE_DATETIME2:
    case EE_TYPE_DATETIMEOFFSET: {
        /* time(5) || date(3) [|| offset(2), ignored: the stored time and date are UTC] */
        int c = order(ee_le_bytes(a + 5, 3), ee_le_bytes(b + 5, 3));
        return c != 0 ? c : order(ee_le_bytes(a, 5), ee_le_bytes(b, 5));
    }
    case EE_TYPE_UTF16LE:
        return order_utf16(a, a_len, b, b_len);
    case EE_TYPE_GUID:
        return order_guid(a, b);
    default: /* UTF8 (byte order is code point order) and BYTES */
        return order_bytes(a, a_len, b, b_len);
    }
}

/* ---- LIKE ------------------------------------------------------------------------------------ */

#define MALFORMED 0x110000u

static size_t utf8_points(const uint8_t *s, size_t len, uint32_t *out) {
    size_t n = 0, i = 0;
    while (i < len) {
        /* Eight ASCII bytes are eight code points: widen them without decoding. */
        if (len - i >= 8 && (word_at(s + i) & 0x8080808080808080u) == 0) {
            const uint8_t *in = s + i;
            uint32_t *to = out + n;
            to[0] = in[0], to[1] = in[1], to[2] = in[2], to[3] = in[3];
            to[4] = in[4], to[5] = in[5], to[6] = in[6], to[7] = in[7];
            n += 8;
            i += 8;
            continue;
        }
        uint32_t c = s[i];
        size_t extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                                     : (c & 0xf8) == 0xf0 ? 3 : 4;
        uint32_t cp = extra == 1 ? c & 0x1f : extra == 2 ? c & 0x0f : c & 0x07;
        int ok = extra < 4 && i + extra < len;
        for (size_t k = 1; ok && k <= extra; k++) {
            ok = (s[i + k] & 0xc0) == 0x80;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (extra == 0) {
            out[n++] = c;
            i += 1;
        } else if (ok) {
            out[n++] = cp;
            i += extra + 1;
        } else {
            out[n++] = MALFORMED + c;
            i += 1;
        }
    }
    return n;
}

static size_t utf16_points(const uint8_t *s, size_t len, uint32_t *out) {
    size_t n = 0, units = len / 2;
    for (size_t i = 0; i < units; i++) {
        uint32_t u = (uint32_t)s[2 * i] | ((uint32_t)s[2 * i + 1] << 8);
        if (u >= 0xd800 && u < 0xdc00 && i + 1 < units) {
            uint32_t low = (uint32_t)s[2 * i + 2] | ((uint32_t)s[2 * i + 3] << 8);
            if (low >= 0xdc00 && low < 0xe000) {
                out[n++] = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
                i++;
                continue;
            }
        }
        /* A lone surrogate is malformed; it stays itself plus an offset so it cannot equal a
         * real code point. */
        out[n++] = (u >= 0xd800 && u < 0xe000) ? MALFORMED + u : u;
    }
    return n;
}

size_t ee_code_points(int32_t type_code, const uint8_t *value, size_t len, uint32_t *out) {
    return type_code == EE_TYPE_UTF16LE ? utf16_points(value, len, out)
                                        : utf8_points(value, len, out);
}

int ee_like_compile(uint32_t *pattern, size_t *pattern_len, uint32_t escape) {
    size_t n = *pattern_len, w = 0;
    for (size_t r = 0; r < n; r++) {
        uint32_t c = pattern[r];
        if (escape != 0 && c == escape) {
            if (r + 1 == n) return 0;
            pattern[w++] = pattern[++r];
        } else if (c == '%') {
            /* Collapse runs of '%': they match the same texts and keep backtracking cheap. */
            if (w == 0 || pattern[w - 1] != EE_LIKE_ANY_RUN) pattern[w++] = EE_LIKE_ANY_RUN;
        } else if (c == '_') {
            pattern[w++] = EE_LIKE_ANY_ONE;
        } else {
            pattern[w++] = c;
        }
    }
    *pattern_len = w;
    return 1;
}

int ee_like_match(const uint32_t *pattern, size_t pattern_len, const uint32_t *text,
                  size_t text_len) {
    size_t p = 0, t = 0;
    size_t star = SIZE_MAX, star_text = 0;
    while (t < text_len) {
        if (p < pattern_len && pattern[p] == EE_LIKE_ANY_RUN) {
            /* Remember the latest '%' and first let it match nothing. */
            star = p++;
            star_text = t;
        } else if (p < pattern_len && (pattern[p] == EE_LIKE_ANY_ONE || pattern[p] == text[t])) {
            p++;
            t++;
        } else if (star != SIZE_MAX) {
            /* Let the latest '%' swallow one more code point. Earlier '%'s never need to be
             * revisited: any match they could enable, the latest one enables too. */
            p = star + 1;
            if (p == pattern_len) return 1; /* a final '%' swallows the rest of the text */
            star_text++;
            /* When a literal follows the '%', a match can only resume where the text holds
             * that literal: trying any other position fails on its first step, so skip it. */
            if (pattern[p] < EE_LIKE_ANY_RUN) {
                while (star_text < text_len && text[star_text] != pattern[p]) star_text++;
            }
            t = star_text;
        } else {
            return 0;
        }
    }
    while (p < pattern_len && pattern[p] == EE_LIKE_ANY_RUN) p++;
    return p == pattern_len;
}

/* ---- Sorting --------------------------------------------------------------------------------- */

void ee_sort_indexes(uint32_t *indexes, uint32_t *tmp, size_t n, ee_index_cmp cmp,
                     const void *ctx) {
    /* Bottom-up merge sort: O(n log n) comparisons, no recursion, stable. */
    uint32_t *src = indexes, *dst = tmp;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                dst[k++] = cmp(ctx, src[j], src[i]) < 0 ? src[j++] : src[i++];
            }
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        uint32_t *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != indexes) memcpy(indexes, src, n * sizeof *indexes);
}

/* enclave_expression.c: SUM and AVG of an arithmetic expression over several columns (5b of
 * enclave.h).
 *
 * It parses and type-checks the authorized expression program, verifies and decrypts each
 * encrypted slot chunk by chunk, evaluates the program per row in exact 128-bit fixed point (or
 * FLOAT64), and returns one fresh randomized cell per group. It must never return, log or keep a
 * decrypted value or a per-row result, and it refuses any program it cannot check completely.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "enclave_internal.h"

#define CHUNK_ROWS 1024
#define MAX_SCALE 38

typedef __int128 i128;
typedef unsigned __int128 u128;

enum { SOURCE_ENCRYPTED = 1, SOURCE_PLAIN = 2 };
enum {
    CODE_SLOT = 1,
    CODE_EXACT = 2,
    CODE_FLOAT = 3,
    CODE_ADD = 4,
    CODE_SUB = 5,
    CODE_MUL = 6,
    CODE_NEG = 7
};

typedef struct expr_slot {
    uint8_t source;
    uint16_t cek_id;
    int32_t type_code;
    int scale;
} expr_slot;

typedef struct expr_insn {
    uint8_t code;
    uint8_t slot;
    int scale;    /* CODE_EXACT: the literal's scale */
    i128 exact;   /* CODE_EXACT: the literal's unscaled value */
    double real;  /* CODE_FLOAT */
} expr_insn;

typedef struct expr_program {
    size_t slot_count;
    expr_slot slots[EE_EXPR_MAX_SLOTS];
    size_t insn_count;
    expr_insn insns[EE_EXPR_MAX_CODE];
    int result_float;
    int result_scale; /* the scale every row's exact value carries */
} expr_program;

/* One stack entry: an exact value (unscaled integer and scale) or a FLOAT64. */
typedef struct expr_value {
    int is_float;
    int scale;
    i128 exact;
    double real;
} expr_value;

typedef struct expr_group {
    i128 sum;
    double float_sum;
    int64_t count;
} expr_group;

/* 10^0 .. 10^38, filled once: the range check runs several times per row, and a loop of 38
 * 128-bit multiplications each time cost more than decrypting the row. */
static u128 powers_of_ten[MAX_SCALE + 1];
static pthread_once_t powers_once = PTHREAD_ONCE_INIT;

static void fill_powers(void) {
    powers_of_ten[0] = 1;
    for (int i = 1; i <= MAX_SCALE; i++) powers_of_ten[i] = powers_of_ten[i - 1] * 10;
}

/* exponent is at most MAX_SCALE everywhere: parse_program bounds every scale. */
static u128 ten_to(int exponent) {
    (void)pthread_once(&powers_once, fill_powers);
    return powers_of_ten[exponent];
}

static int in_range(i128 v) {
    u128 magnitude = v < 0 ? (u128)0 - (u128)v : (u128)v;
    /* 2^126 < 10^38: almost every value is settled by its top two bits, without the table. */
    return (magnitude >> 126) == 0 || magnitude < ten_to(38);
}

static uint64_t get_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--) v = (v << 8) | p[i - 1];
    return v;
}

static void put_le(uint8_t *p, u128 v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static double as_double(const expr_value *v) {
    if (v->is_float) return v->real;
    return (double)v->exact / (double)ten_to(v->scale);
}

/* Parses the program and checks it completely before any cell is read: known codes, slot
 * indexes in range, every slot used, a stack that never underflows and ends with one value,
 * and exact scales that stay within DECIMAL(38). 0 on any fault. */
static int parse_program(expr_program *p, const uint8_t *b, size_t len) {
    memset(p, 0, sizeof *p);
    if (len < 4 || b[0] != EE_EXPR_PROGRAM_VERSION) return 0;
    p->slot_count = b[1];
    if (p->slot_count == 0 || p->slot_count > EE_EXPR_MAX_SLOTS) return 0;
    size_t at = 2;
    int encrypted = 0;
    for (size_t s = 0; s < p->slot_count; s++) {
        if (len - at < 5) return 0;
        expr_slot *slot = &p->slots[s];
        slot->source = b[at];
        slot->cek_id = (uint16_t)get_le(b + at + 1, 2);
        slot->type_code = b[at + 3];
        slot->scale = b[at + 4];
        at += 5;
        if (slot->source != SOURCE_ENCRYPTED && slot->source != SOURCE_PLAIN) return 0;
        if ((slot->source == SOURCE_PLAIN) != (slot->cek_id == 0)) return 0;
        if (slot->type_code != EE_TYPE_INT64 && slot->type_code != EE_TYPE_DECIMAL &&
            slot->type_code != EE_TYPE_FLOAT64) {
            return 0;
        }
        if (slot->scale > MAX_SCALE || (slot->type_code != EE_TYPE_DECIMAL && slot->scale != 0)) {
            return 0;
        }
        encrypted |= slot->source == SOURCE_ENCRYPTED;
    }
    if (!encrypted || len - at < 2) return 0;
    size_t code_len = get_le(b + at, 2);
    at += 2;
    if (code_len == 0 || code_len > EE_EXPR_MAX_CODE || len - at != code_len) return 0;

    /* The static pass: a stack of (is_float, scale) mirrors what evaluation will push. */
    int kinds[EE_EXPR_MAX_CODE], scales[EE_EXPR_MAX_CODE];
    size_t depth = 0, end = at + code_len;
    uint32_t used = 0;
    while (at < end) {
        if (p->insn_count == EE_EXPR_MAX_CODE) return 0;
        expr_insn *insn = &p->insns[p->insn_count++];
        insn->code = b[at++];
        switch (insn->code) {
        case CODE_SLOT:
            if (end - at < 1 || b[at] >= p->slot_count) return 0;
            insn->slot = b[at++];
            used |= 1u << insn->slot;
            kinds[depth] = p->slots[insn->slot].type_code == EE_TYPE_FLOAT64;
            scales[depth++] = p->slots[insn->slot].scale;
            break;
        case CODE_EXACT: {
            if (end - at < 18 || b[at] > MAX_SCALE || b[at + 1] > 1) return 0;
            insn->scale = b[at];
            u128 magnitude = ((u128)get_le(b + at + 10, 8) << 64) | get_le(b + at + 2, 8);
            if (magnitude >= ten_to(38)) return 0;
            insn->exact = b[at + 1] == 1 ? (i128)magnitude : -(i128)magnitude;
            at += 18;
            kinds[depth] = 0;
            scales[depth++] = insn->scale;
            break;
        }
        case CODE_FLOAT: {
            if (end - at < 8) return 0;
            uint64_t bits = get_le(b + at, 8);
            memcpy(&insn->real, &bits, 8);
            at += 8;
            kinds[depth] = 1;
            scales[depth++] = 0;
            break;
        }
        case CODE_ADD:
        case CODE_SUB:
        case CODE_MUL: {
            if (depth < 2) return 0;
            int a = scales[depth - 2], c = scales[depth - 1];
            int is_float = kinds[depth - 2] || kinds[depth - 1];
            int scale = insn->code == CODE_MUL ? a + c : (a > c ? a : c);
            if (!is_float && scale > MAX_SCALE) return 0;
            depth--;
            kinds[depth - 1] = is_float;
            scales[depth - 1] = is_float ? 0 : scale;
            break;
        }
        case CODE_NEG:
            if (depth < 1) return 0;
            break;
        default:
            return 0;
        }
    }
    if (depth != 1 || used != (uint32_t)((1ull << p->slot_count) - 1)) return 0;
    p->result_float = kinds[0];
    p->result_scale = scales[0];
    return 1;
}

/* 1 and *out: the exact value scaled up by 10^by, unless it leaves DECIMAL(38). */
static int rescale(i128 v, int by, i128 *out) {
    if (by == 0) {
        *out = v;
        return in_range(v);
    }
    i128 factor = (i128)ten_to(by);
    return !__builtin_mul_overflow(v, factor, out) && in_range(*out);
}

/* Applies one binary operator; EE_ERR_OVERFLOW when an exact result leaves DECIMAL(38). */
static ee_status apply(uint8_t code, expr_value *a, const expr_value *b) {
    if (a->is_float || b->is_float) {
        double x = as_double(a), y = as_double(b);
        a->real = code == CODE_ADD ? x + y : code == CODE_SUB ? x - y : x * y;
        a->is_float = 1;
        a->scale = 0;
        return EE_OK;
    }
    i128 x = a->exact, y = b->exact, r;
    int scale;
    if (code == CODE_MUL) {
        scale = a->scale + b->scale;
        if (x == (int64_t)x && y == (int64_t)y) {
            r = (i128)(int64_t)x * (int64_t)y; /* 64 x 64 bits always fits in 128 */
        } else if (__builtin_mul_overflow(x, y, &r)) {
            return EE_ERR_OVERFLOW;
        }
    } else {
        /* + and - align both operands on the larger scale first, as DECIMAL arithmetic does. */
        scale = a->scale > b->scale ? a->scale : b->scale;
        if (!rescale(x, scale - a->scale, &x) || !rescale(y, scale - b->scale, &y)) {
            return EE_ERR_OVERFLOW;
        }
        int overflow = code == CODE_ADD ? __builtin_add_overflow(x, y, &r)
                                        : __builtin_sub_overflow(x, y, &r);
        if (overflow) return EE_ERR_OVERFLOW;
    }
    if (!in_range(r)) return EE_ERR_OVERFLOW;
    a->exact = r;
    a->scale = scale;
    return EE_OK;
}

/* Reads slot `s` of chunk row `i` (valid and well formed: ee_plain_load checked both). */
static void read_slot(expr_value *v, const expr_slot *slot, const ee_plain *plain, size_t i) {
    size_t len;
    const uint8_t *value = ee_plain_value(plain, i, &len);
    memset(v, 0, sizeof *v);
    if (slot->type_code == EE_TYPE_FLOAT64) {
        uint64_t bits = get_le(value, 8);
        memcpy(&v->real, &bits, 8);
        v->is_float = 1;
    } else if (slot->type_code == EE_TYPE_INT64) {
        v->exact = (int64_t)get_le(value, 8);
    } else {
        /* DECIMAL: sign byte, then a little-endian magnitude of any length (checked below). */
        u128 magnitude;
        if (len == 17) { /* the usual form: exactly 16 bytes of magnitude */
            magnitude = ((u128)get_le(value + 9, 8) << 64) | get_le(value + 1, 8);
        } else {
            size_t m = len - 1;
            while (m > 0 && value[m] == 0) m--; /* value[1..m]: without high zeros */
            magnitude = ten_to(38);             /* too long for 128 bits: out of range, caught */
            if (m <= 16) {
                magnitude = 0;
                for (size_t k = m; k >= 1; k--) magnitude = (magnitude << 8) | value[k];
            }
        }
        if (magnitude > ten_to(38)) magnitude = ten_to(38);
        v->exact = value[0] == 1 ? (i128)magnitude : -(i128)magnitude;
        v->scale = slot->scale;
    }
}

/* Evaluates the program over one row; *is_null when an operand is NULL. */
static ee_status evaluate(expr_value *out, int *is_null, const expr_program *p,
                          const ee_plain *plains, size_t i, expr_value *stack) {
    *is_null = 0;
    for (size_t s = 0; s < p->slot_count; s++) {
        if (!plains[s].valid[i]) {
            *is_null = 1;
            return EE_OK;
        }
    }
    size_t depth = 0;
    for (size_t k = 0; k < p->insn_count; k++) {
        const expr_insn *insn = &p->insns[k];
        expr_value *top = &stack[depth];
        switch (insn->code) {
        case CODE_SLOT:
            read_slot(top, &p->slots[insn->slot], &plains[insn->slot], i);
            if (!top->is_float && !in_range(top->exact)) return EE_ERR_OVERFLOW;
            depth++;
            break;
        case CODE_EXACT:
            *top = (expr_value){0, insn->scale, insn->exact, 0};
            depth++;
            break;
        case CODE_FLOAT:
            *top = (expr_value){1, 0, 0, insn->real};
            depth++;
            break;
        case CODE_NEG:
            if (stack[depth - 1].is_float) {
                stack[depth - 1].real = -stack[depth - 1].real;
            } else {
                stack[depth - 1].exact = -stack[depth - 1].exact;
            }
            break;
        default: {
            ee_status status = apply(insn->code, &stack[depth - 2], &stack[depth - 1]);
            if (status != EE_OK) return status;
            depth--;
        }
        }
    }
    *out = stack[0];
    return EE_OK;
}

ee_status ee_enclave_aggregate_expression(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len, int64_t *out_offsets,
    size_t out_offsets_cap, uint64_t query_id, uint16_t cek_id, int32_t type_code, int32_t op,
    const uint8_t *constant, size_t constant_len, const int32_t *offsets, size_t offsets_len,
    const uint8_t *data, size_t data_len, const uint8_t *validity, size_t validity_len,
    size_t validity_bit_offset, size_t count, const int64_t *group_ids, size_t group_ids_len,
    size_t group_count) {
    ee_status status;
    ee_cell_keys result_keys;
    ee_cell_keys *slot_keys = NULL;
    expr_program *program = NULL;
    expr_value *stack = NULL;
    expr_group *groups = NULL;
    uint8_t *blob = NULL, *results = NULL, *result_valid = NULL;
    int64_t *ids = NULL, *result_offsets = NULL;
    size_t groups_cap = 0, results_cap = 0, slot_keys_cap = 0, stack_cap = 0;
    expr_value value; /* one row's expression value: plaintext, wiped at done: */
    memset(&value, 0, sizeof value);
    ee_plain plains[EE_EXPR_MAX_SLOTS];
    for (size_t s = 0; s < EE_EXPR_MAX_SLOTS; s++) ee_plain_init(&plains[s]);
    memset(&result_keys, 0, sizeof result_keys);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        (op != EE_OP_SUM_EXPR && op != EE_OP_AVG_EXPR) ||
        (constant == NULL && constant_len > 0)) {
        return EE_ERR_ARGUMENT;
    }
    /* Copy the program in: what is hashed for the authorization is exactly what is parsed. */
    blob = malloc(constant_len > 0 ? constant_len : 1);
    program = malloc(sizeof *program);
    if (blob == NULL || program == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    if (constant_len > 0) memcpy(blob, constant, constant_len);
    status = ee_query_key(&result_keys, query_id, cek_id, op, type_code, blob, constant_len);
    if (status != EE_OK) goto done;
    if (!parse_program(program, blob, constant_len)) {
        status = EE_ERR_PACKAGE;
        goto done;
    }
    if (type_code != (program->result_float ? EE_TYPE_FLOAT64 : EE_TYPE_DECIMAL)) {
        status = EE_ERR_TYPE;
        goto done;
    }
    size_t first = 0;
    while (program->slots[first].source != SOURCE_ENCRYPTED) first++;
    if (program->slots[first].cek_id != cek_id) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    /* Every key the program reads must be authorized for this very program. */
    slot_keys_cap = program->slot_count * sizeof *slot_keys;
    slot_keys = ee_secret_alloc(slot_keys_cap);
    if (slot_keys == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t s = 0; s < program->slot_count; s++) {
        if (program->slots[s].source != SOURCE_ENCRYPTED) continue;
        status = ee_query_key(&slot_keys[s], query_id, program->slots[s].cek_id, op, type_code,
                              blob, constant_len);
        if (status != EE_OK) goto done;
    }
    status = ee_input_check(&in);
    if (status != EE_OK) goto done;
    size_t rows = count / program->slot_count;
    if (count % program->slot_count != 0 || group_ids == NULL || group_ids_len != rows ||
        group_count > (size_t)INT32_MAX) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    if (out_offsets_cap < group_count + 1) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = ee_group_ids_copy(&ids, group_ids, rows, group_count);
    if (status != EE_OK) goto done;
    groups_cap = (group_count + 1) * sizeof *groups;
    groups = ee_secret_alloc(groups_cap);
    stack_cap = EE_EXPR_MAX_CODE * sizeof *stack;
    stack = ee_secret_alloc(stack_cap);
    results_cap = (group_count + 1) * 17;
    results = ee_secret_alloc(results_cap);
    result_offsets = malloc((group_count + 1) * sizeof *result_offsets);
    result_valid = malloc(group_count + 1);
    if (groups == NULL || stack == NULL || results == NULL || result_offsets == NULL ||
        result_valid == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }

    for (size_t start = 0; start < rows; start += CHUNK_ROWS) {
        size_t n = rows - start < CHUNK_ROWS ? rows - start : CHUNK_ROWS;
        for (size_t s = 0; s < program->slot_count; s++) {
            const expr_slot *slot = &program->slots[s];
            const ee_cell_keys *keys = slot->source == SOURCE_ENCRYPTED ? &slot_keys[s] : NULL;
            status = ee_plain_load(&plains[s], keys, slot->type_code, &in, s * rows + start, n);
            if (status != EE_OK) goto done;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t gid = ids[start + i];
            if (gid < 0) continue;
            int is_null;
            status = evaluate(&value, &is_null, program, plains, i, stack);
            if (status != EE_OK) goto done;
            if (is_null) continue;
            expr_group *g = &groups[gid];
            g->count++;
            if (program->result_float) {
                g->float_sum += value.real;
            } else if (__builtin_add_overflow(g->sum, value.exact, &g->sum) ||
                       !in_range(g->sum)) {
                status = EE_ERR_OVERFLOW;
                goto done;
            }
        }
    }

    size_t pos = 0;
    for (size_t gi = 0; gi < group_count; gi++) {
        expr_group *g = &groups[gi];
        uint8_t *r = results + pos;
        size_t len = 0;
        result_offsets[gi] = (int64_t)pos;
        result_valid[gi] = g->count > 0;
        if (!result_valid[gi]) continue;
        if (op == EE_OP_AVG_EXPR || program->result_float) {
            double answer;
            if (program->result_float) {
                answer = op == EE_OP_AVG_EXPR ? g->float_sum / (double)g->count : g->float_sum;
            } else {
                long double scaled = (long double)g->sum / (long double)g->count;
                answer = (double)(scaled / (long double)ten_to(program->result_scale));
            }
            uint64_t bits;
            memcpy(&bits, &answer, 8);
            put_le(r, bits, 8);
            len = 8;
        } else {
            u128 magnitude = g->sum < 0 ? (u128)0 - (u128)g->sum : (u128)g->sum;
            r[0] = g->sum < 0 ? 0 : 1;
            put_le(r + 1, magnitude, 16);
            len = 17;
        }
        pos += len;
    }
    result_offsets[group_count] = (int64_t)pos;
    status = ee_encrypt_values(out_data, out_data_cap, out_data_len, out_offsets, &result_keys, 0,
                               results, result_offsets, result_valid, group_count);
done:
    ee_wipe(&value, sizeof value);
    ee_wipe(&result_keys, sizeof result_keys);
    ee_secret_free(slot_keys, slot_keys_cap);
    for (size_t s = 0; s < EE_EXPR_MAX_SLOTS; s++) ee_plain_free(&plains[s]);
    ee_secret_free(groups, groups_cap);
    ee_secret_free(stack, stack_cap);
    ee_secret_free(results, results_cap);
    free(result_offsets);
    free(result_valid);
    free(ids);
    /* The program holds only what the host already passed in the clear. */
    free(program);
    free(blob);
    return status;
}

/* ---- One call for every SUM and AVG of a stage (5d of enclave.h) ------------------------------ */

#define STAGE_MAX_THREADS 4
#define STAGE_ROWS_PER_THREAD 65536 /* fewer rows than this per thread: one thread */

typedef struct stage_output {
    int32_t op;
    int32_t type_code;
    uint16_t cek_id;
    int decimal_scale;
    const uint8_t *constant; /* inside the private copy of the layout */
    size_t constant_len;
    size_t slot_count;
    uint8_t slots[EE_EXPR_MAX_SLOTS]; /* stage slot of each operand (program slot order) */
    expr_program *program;            /* SUM_EXPR and AVG_EXPR only */
} stage_output;

typedef struct stage_plan {
    size_t slot_count;
    expr_slot slots[EE_EXPR_MAX_SLOTS]; /* what every reader of a stage slot agreed on */
    size_t output_count;
    stage_output outputs[EE_STAGE_MAX_OUTPUTS];
} stage_plan;

/* One thread's share: rows [begin, end), its own plaintext copies and per-group sums. */
typedef struct stage_worker {
    const stage_plan *plan;
    const ee_cell_keys *slot_keys;
    const ee_input *in;
    const int64_t *ids;
    size_t rows, begin, end, group_count;
    expr_group *groups; /* output_count * group_count, secret */
    size_t groups_cap;
    ee_status status;
} stage_worker;

static int expression_op(int32_t op) { return op == EE_OP_SUM_EXPR || op == EE_OP_AVG_EXPR; }

/* Records what a reader needs of stage slot `s`; 0 when an earlier reader needs otherwise. */
static int stage_slot_claim(stage_plan *plan, uint32_t *claimed, size_t s, const expr_slot *need,
                            int exact_scale) {
    expr_slot *slot = &plan->slots[s];
    if (!(*claimed & (1u << s))) {
        *slot = *need;
        if (!exact_scale) slot->scale = -1; /* not known yet: a program may still name it */
        *claimed |= 1u << s;
        return 1;
    }
    if (slot->source != need->source || slot->cek_id != need->cek_id ||
        slot->type_code != need->type_code) {
        return 0;
    }
    /* A plain SUM or AVG reads unscaled values; only programs care about the scale. */
    if (exact_scale) {
        if (slot->scale < 0) {
            slot->scale = need->scale;
        } else if (slot->scale != need->scale) {
            return 0;
        }
    }
    return 1;
}

/* Parses the layout (a private copy) completely before any key or cell is touched. */
static ee_status parse_stage(stage_plan *plan, const uint8_t *b, size_t len) {
    memset(plan, 0, sizeof *plan);
    if (len < 3 || b[0] != EE_STAGE_LAYOUT_VERSION) return EE_ERR_ARGUMENT;
    plan->slot_count = b[1];
    plan->output_count = b[2];
    if (plan->slot_count == 0 || plan->slot_count > EE_EXPR_MAX_SLOTS ||
        plan->output_count == 0 || plan->output_count > EE_STAGE_MAX_OUTPUTS) {
        return EE_ERR_ARGUMENT;
    }
    size_t at = 3;
    for (size_t o = 0; o < plan->output_count; o++) {
        stage_output *out = &plan->outputs[o];
        if (len - at < 7) return EE_ERR_ARGUMENT;
        out->op = b[at];
        out->type_code = b[at + 1];
        out->cek_id = (uint16_t)get_le(b + at + 2, 2);
        out->decimal_scale = b[at + 4];
        out->constant_len = get_le(b + at + 5, 2);
        at += 7;
        if (len - at < out->constant_len) return EE_ERR_ARGUMENT;
        out->constant = b + at;
        at += out->constant_len;
        if (out->op == EE_OP_SUM || out->op == EE_OP_AVG) {
            if (out->constant_len != 0 || out->decimal_scale > MAX_SCALE) return EE_ERR_ARGUMENT;
            out->slot_count = 1;
        } else if (expression_op(out->op)) {
            /* The program's own slot count; parse_program checks the rest later. */
            if (out->constant_len < 2) return EE_ERR_PACKAGE;
            out->slot_count = out->constant[1];
            if (out->slot_count == 0 || out->slot_count > EE_EXPR_MAX_SLOTS) {
                return EE_ERR_PACKAGE;
            }
        } else {
            return EE_ERR_ARGUMENT;
        }
        if (len - at < out->slot_count) return EE_ERR_ARGUMENT;
        for (size_t k = 0; k < out->slot_count; k++) {
            out->slots[k] = b[at + k];
            if (out->slots[k] >= plan->slot_count) return EE_ERR_ARGUMENT;
        }
        at += out->slot_count;
    }
    return at == len ? EE_OK : EE_ERR_ARGUMENT;
}

/* Adds one row's value of a plain SUM or AVG: the arithmetic of ee_enclave_aggregate. */
static ee_status stage_add_plain(expr_group *g, const stage_output *out, const ee_plain *plain,
                                 size_t i) {
    size_t len;
    const uint8_t *value = ee_plain_value(plain, i, &len);
    g->count++;
    if (out->type_code == EE_TYPE_FLOAT32 || out->type_code == EE_TYPE_FLOAT64) {
        uint64_t bits = get_le(value, len);
        if (len == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            g->float_sum += (double)f;
        } else {
            double d;
            memcpy(&d, &bits, 8);
            g->float_sum += d;
        }
        return EE_OK;
    }
    i128 v;
    if (out->type_code == EE_TYPE_INT64) {
        v = (int64_t)get_le(value, 8);
    } else if (len == 17) { /* DECIMAL's usual form: sign byte and 16 bytes of magnitude */
        u128 magnitude = ((u128)get_le(value + 9, 8) << 64) | get_le(value + 1, 8);
        if ((magnitude >> 126) != 0 && magnitude >= ten_to(38)) return EE_ERR_OVERFLOW;
        v = value[0] == 1 ? (i128)magnitude : -(i128)magnitude;
    } else {
        expr_slot slot = {SOURCE_ENCRYPTED, 0, EE_TYPE_DECIMAL, 0};
        expr_value read;
        read_slot(&read, &slot, plain, i);
        v = read.exact;
        ee_wipe(&read, sizeof read);
        if (!in_range(v)) return EE_ERR_OVERFLOW; /* |value| >= 10^38: no DECIMAL(38) */
    }
    if (__builtin_add_overflow(g->sum, v, &g->sum)) return EE_ERR_OVERFLOW;
    return EE_OK;
}

static void *stage_work(void *arg) {
    stage_worker *w = arg;
    const stage_plan *plan = w->plan;
    ee_status status = EE_OK;
    ee_plain plains[EE_EXPR_MAX_SLOTS];
    ee_plain view[EE_EXPR_MAX_SLOTS];
    for (size_t s = 0; s < EE_EXPR_MAX_SLOTS; s++) ee_plain_init(&plains[s]);
    expr_value value;
    memset(&value, 0, sizeof value);
    size_t stack_cap = EE_EXPR_MAX_CODE * sizeof(expr_value);
    expr_value *stack = ee_secret_alloc(stack_cap);
    if (stack == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t start = w->begin; start < w->end; start += CHUNK_ROWS) {
        size_t n = w->end - start < CHUNK_ROWS ? w->end - start : CHUNK_ROWS;
        for (size_t s = 0; s < plan->slot_count; s++) {
            const expr_slot *slot = &plan->slots[s];
            const ee_cell_keys *keys = slot->source == SOURCE_ENCRYPTED ? &w->slot_keys[s] : NULL;
            status = ee_plain_load(&plains[s], keys, slot->type_code, w->in, s * w->rows + start,
                                   n);
            if (status != EE_OK) goto done;
        }
        for (size_t o = 0; o < plan->output_count; o++) {
            const stage_output *out = &plan->outputs[o];
            expr_group *groups = w->groups + o * w->group_count;
            const int64_t *ids = w->ids + start;
            if (!expression_op(out->op)) {
                const ee_plain *plain = &plains[out->slots[0]];
                for (size_t i = 0; i < n; i++) {
                    if (ids[i] < 0 || !plain->valid[i]) continue;
                    status = stage_add_plain(&groups[ids[i]], out, plain, i);
                    if (status != EE_OK) goto done;
                }
                continue;
            }
            /* The program reads its slot k from stage slot slots[k]: a shallow view. */
            for (size_t k = 0; k < out->slot_count; k++) view[k] = plains[out->slots[k]];
            for (size_t i = 0; i < n; i++) {
                if (ids[i] < 0) continue;
                int is_null;
                status = evaluate(&value, &is_null, out->program, view, i, stack);
                if (status != EE_OK) goto done;
                if (is_null) continue;
                expr_group *g = &groups[ids[i]];
                g->count++;
                if (out->program->result_float) {
                    g->float_sum += value.real;
                } else if (__builtin_add_overflow(g->sum, value.exact, &g->sum) ||
                           !in_range(g->sum)) {
                    status = EE_ERR_OVERFLOW;
                    goto done;
                }
            }
        }
    }
done:
    ee_wipe(&value, sizeof value);
    ee_secret_free(stack, stack_cap);
    for (size_t s = 0; s < EE_EXPR_MAX_SLOTS; s++) ee_plain_free(&plains[s]);
    w->status = status;
    return NULL;
}

/* The plaintext result of one output for one group, as ee_enclave_aggregate and
 * ee_enclave_aggregate_expression write it; *len 0 for an empty group. */
static ee_status stage_result(uint8_t *r, size_t *len, const stage_output *out,
                              const expr_group *g) {
    *len = 0;
    if (g->count == 0) return EE_OK;
    int is_float, scale;
    if (expression_op(out->op)) {
        is_float = out->program->result_float;
        scale = out->program->result_scale;
    } else {
        is_float = out->type_code == EE_TYPE_FLOAT32 || out->type_code == EE_TYPE_FLOAT64;
        scale = out->type_code == EE_TYPE_DECIMAL ? out->decimal_scale : 0;
    }
    int average = out->op == EE_OP_AVG || out->op == EE_OP_AVG_EXPR;
    if (average || is_float) {
        double answer;
        if (is_float) {
            answer = average ? g->float_sum / (double)g->count : g->float_sum;
        } else {
            long double scaled = (long double)g->sum / (long double)g->count;
            answer = (double)(scaled / (long double)ten_to(scale));
        }
        uint64_t bits;
        memcpy(&bits, &answer, 8);
        put_le(r, bits, 8);
        *len = 8;
        return EE_OK;
    }
    if (!in_range(g->sum)) return EE_ERR_OVERFLOW;
    u128 magnitude = g->sum < 0 ? (u128)0 - (u128)g->sum : (u128)g->sum;
    r[0] = g->sum < 0 ? 0 : 1;
    put_le(r + 1, magnitude, 16);
    *len = 17;
    return EE_OK;
}

/* A parsed and authorized stage layout, with the keys of its outputs and of its slots. */
typedef struct stage_prepared {
    uint8_t *blob; /* the private copy of the layout that was parsed and hashed */
    stage_plan *plan;
    ee_cell_keys *result_keys, *slot_keys;
    size_t result_keys_cap, slot_keys_cap;
} stage_prepared;

static void stage_release(stage_prepared *p) {
    ee_secret_free(p->result_keys, p->result_keys_cap);
    ee_secret_free(p->slot_keys, p->slot_keys_cap);
    if (p->plan != NULL) {
        /* Every entry: a layout refused early may leave output_count above the maximum. */
        for (size_t o = 0; o < EE_STAGE_MAX_OUTPUTS; o++) free(p->plan->outputs[o].program);
    }
    free(p->plan);
    /* The layout holds only what the host already passed in the clear. */
    free(p->blob);
    memset(p, 0, sizeof *p);
}

/* Parses and authorizes a layout (5d) before any cell is read; stage_release frees it in every
 * case. */
static ee_status stage_prepare(stage_prepared *p, uint64_t query_id, const uint8_t *layout,
                               size_t layout_len) {
    ee_status status;
    memset(p, 0, sizeof *p);
    if (layout == NULL || layout_len == 0) return EE_ERR_ARGUMENT;
    /* Copy the layout in: the programs hashed for authorization are exactly those parsed. */
    p->blob = malloc(layout_len);
    p->plan = calloc(1, sizeof *p->plan);
    if (p->blob == NULL || p->plan == NULL) return EE_ERR_INTERNAL;
    memcpy(p->blob, layout, layout_len);
    stage_plan *plan = p->plan;
    status = parse_stage(plan, p->blob, layout_len);
    if (status != EE_OK) return status;

    /* Each output is authorized exactly as its own call would be: a plain SUM or AVG for
     * (cek_id, op, type_code, SHA-256 of nothing); a program for its result key and for every
     * key it reads, each with (cek_id, op, type_code, SHA-256(program)). */
    p->result_keys_cap = plan->output_count * sizeof *p->result_keys;
    p->slot_keys_cap = plan->slot_count * sizeof *p->slot_keys;
    p->result_keys = ee_secret_alloc(p->result_keys_cap);
    p->slot_keys = ee_secret_alloc(p->slot_keys_cap);
    if (p->result_keys == NULL || p->slot_keys == NULL) return EE_ERR_INTERNAL;
    ee_cell_keys *result_keys = p->result_keys, *slot_keys = p->slot_keys;
    for (size_t o = 0; o < plan->output_count; o++) {
        stage_output *out = &plan->outputs[o];
        status = ee_query_key(&result_keys[o], query_id, out->cek_id, out->op, out->type_code,
                              out->constant, out->constant_len);
        if (status != EE_OK) return status;
        if (!expression_op(out->op)) {
            int numeric = out->type_code == EE_TYPE_INT64 || out->type_code == EE_TYPE_FLOAT32 ||
                          out->type_code == EE_TYPE_FLOAT64 || out->type_code == EE_TYPE_DECIMAL;
            if (!numeric) {
                return EE_ERR_TYPE;
            }
            continue;
        }
        out->program = malloc(sizeof *out->program);
        if (out->program == NULL) {
            return EE_ERR_INTERNAL;
        }
        if (!parse_program(out->program, out->constant, out->constant_len) ||
            out->program->slot_count != out->slot_count) {
            return EE_ERR_PACKAGE;
        }
        if (out->type_code != (out->program->result_float ? EE_TYPE_FLOAT64 : EE_TYPE_DECIMAL)) {
            return EE_ERR_TYPE;
        }
        size_t first = 0;
        while (out->program->slots[first].source != SOURCE_ENCRYPTED) first++;
        if (out->program->slots[first].cek_id != out->cek_id) {
            return EE_ERR_ARGUMENT;
        }
        for (size_t k = 0; k < out->slot_count; k++) {
            const expr_slot *need = &out->program->slots[k];
            if (need->source != SOURCE_ENCRYPTED) continue;
            status = ee_query_key(&slot_keys[out->slots[k]], query_id, need->cek_id, out->op,
                                  out->type_code, out->constant, out->constant_len);
            if (status != EE_OK) return status;
        }
    }
    /* Every reader of a stage slot must read it the same way (source, key, type and, for the
     * programs, scale), so one decryption serves them all; each slot must have a reader. */
    uint32_t claimed = 0;
    for (size_t o = 0; o < plan->output_count; o++) {
        const stage_output *out = &plan->outputs[o];
        for (size_t k = 0; k < out->slot_count; k++) {
            expr_slot plain_need = {SOURCE_ENCRYPTED, out->cek_id, out->type_code, 0};
            int program = expression_op(out->op);
            const expr_slot *need = program ? &out->program->slots[k] : &plain_need;
            if (!stage_slot_claim(plan, &claimed, out->slots[k], need, program)) {
                return EE_ERR_ARGUMENT;
            }
            if (!program) slot_keys[out->slots[0]] = result_keys[o];
        }
    }
    for (size_t s = 0; s < plan->slot_count; s++) {
        if (plan->slots[s].scale < 0) plan->slots[s].scale = 0;
    }
    if (claimed != (uint32_t)((1ull << plan->slot_count) - 1)) {
        return EE_ERR_ARGUMENT;
    }
    return EE_OK;
}

/* Writes a stage's results: output o's cells (one per group, under result_keys[o]) one output
 * after another, with out_offsets counting from the start of out_data. Every result is computed
 * first, so an overflow anywhere stops the call before any cell is written. */
static ee_status write_stage_results(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                                     int64_t *out_offsets, const stage_plan *plan,
                                     const ee_cell_keys *result_keys, const expr_group *groups,
                                     size_t group_count) {
    ee_status status = EE_OK;
    size_t cells = plan->output_count * group_count;
    size_t results_cap = (cells + 1) * 17;
    uint8_t *results = ee_secret_alloc(results_cap);
    int64_t *result_offsets = malloc((cells + 1) * sizeof *result_offsets);
    uint8_t *result_valid = malloc(cells + 1);
    if (results == NULL || result_offsets == NULL || result_valid == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    size_t pos = 0;
    for (size_t c = 0; c < cells; c++) {
        size_t len;
        result_offsets[c] = (int64_t)pos;
        status = stage_result(results + pos, &len, &plan->outputs[c / group_count], &groups[c]);
        if (status != EE_OK) goto done;
        result_valid[c] = len > 0;
        pos += len;
    }
    result_offsets[cells] = (int64_t)pos;
    size_t written = 0;
    for (size_t o = 0; o < plan->output_count; o++) {
        size_t first = o * group_count, used = 0;
        uint8_t *into = out_data == NULL ? NULL : out_data + written;
        status = ee_encrypt_values(into, out_data_cap - written, &used, out_offsets + first,
                                   &result_keys[o], 0, results, result_offsets + first,
                                   result_valid + first, group_count);
        if (status != EE_OK) goto done;
        /* ee_encrypt_values counts from 0; shift this output's offsets to the whole output. */
        for (size_t g = 0; g <= group_count; g++) out_offsets[first + g] += (int64_t)written;
        written += used;
    }
    *out_data_len = written;
done:
    ee_secret_free(results, results_cap);
    free(result_offsets);
    free(result_valid);
    return status;
}

ee_status ee_enclave_aggregate_stage(uint8_t *out_data, size_t out_data_cap,
                                     size_t *out_data_len, int64_t *out_offsets,
                                     size_t out_offsets_cap, uint64_t query_id,
                                     const uint8_t *layout, size_t layout_len,
                                     const int32_t *offsets, size_t offsets_len,
                                     const uint8_t *data, size_t data_len,
                                     const uint8_t *validity, size_t validity_len,
                                     size_t validity_bit_offset, size_t count,
                                     const int64_t *group_ids, size_t group_ids_len,
                                     size_t group_count) {
    ee_status status;
    stage_prepared prep;
    int64_t *ids = NULL;
    size_t threads = 0;
    stage_worker workers[STAGE_MAX_THREADS];
    memset(workers, 0, sizeof workers);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};

    memset(&prep, 0, sizeof prep);
    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        layout == NULL || layout_len == 0) {
        return EE_ERR_ARGUMENT;
    }
    status = stage_prepare(&prep, query_id, layout, layout_len);
    if (status != EE_OK) goto done;
    stage_plan *plan = prep.plan;
    ee_cell_keys *result_keys = prep.result_keys, *slot_keys = prep.slot_keys;
    status = ee_input_check(&in);
    if (status != EE_OK) goto done;
    size_t rows = count / plan->slot_count;
    if (count % plan->slot_count != 0 || group_ids == NULL || group_ids_len != rows ||
        group_count > (size_t)INT32_MAX) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    size_t cells = plan->output_count * group_count;
    if (out_offsets_cap < cells + 1) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = ee_group_ids_copy(&ids, group_ids, rows, group_count);
    if (status != EE_OK) goto done;

    /* Rows split evenly over up to STAGE_MAX_THREADS threads, each with its own sums; merged
     * below in thread order, so a given row count always adds in the same order. */
    threads = rows / STAGE_ROWS_PER_THREAD;
    if (threads < 1) threads = 1;
    if (threads > STAGE_MAX_THREADS) threads = STAGE_MAX_THREADS;
    for (size_t t = 0; t < threads; t++) {
        stage_worker *w = &workers[t];
        *w = (stage_worker){plan, slot_keys, &in, ids, rows, rows * t / threads,
                            rows * (t + 1) / threads, group_count, NULL, 0, EE_OK};
        w->groups_cap = (cells + 1) * sizeof *w->groups;
        w->groups = ee_secret_alloc(w->groups_cap);
        if (w->groups == NULL) {
            status = EE_ERR_INTERNAL;
            goto done;
        }
    }
    pthread_t handles[STAGE_MAX_THREADS];
    size_t started = 1;
    for (size_t t = 1; t < threads; t++) {
        if (pthread_create(&handles[t], NULL, stage_work, &workers[t]) != 0) {
            workers[t].status = EE_ERR_INTERNAL;
            break;
        }
        started++;
    }
    stage_work(&workers[0]);
    for (size_t t = 1; t < started; t++) pthread_join(handles[t], NULL);
    for (size_t t = 0; t < threads; t++) {
        /* A bad cell anywhere is EE_ERR_AUTH whatever else a thread saw first. */
        if (workers[t].status == EE_ERR_AUTH) status = EE_ERR_AUTH;
    }
    for (size_t t = 0; t < threads && status == EE_OK; t++) status = workers[t].status;
    if (status != EE_OK) goto done;
    for (size_t t = 1; t < threads; t++) {
        for (size_t c = 0; c < cells; c++) {
            expr_group *into = &workers[0].groups[c];
            const expr_group *from = &workers[t].groups[c];
            into->count += from->count;
            into->float_sum += from->float_sum;
            if (__builtin_add_overflow(into->sum, from->sum, &into->sum)) {
                status = EE_ERR_OVERFLOW;
                goto done;
            }
        }
    }

    status = write_stage_results(out_data, out_data_cap, out_data_len, out_offsets, plan,
                                 result_keys, workers[0].groups, group_count);
done:
    for (size_t t = 0; t < STAGE_MAX_THREADS; t++) {
        ee_secret_free(workers[t].groups, workers[t].groups_cap);
    }
    stage_release(&prep);
    free(ids);
    return status;
}

/* ---- A stage's sums as sealed partial states (5e of enclave.h) -------------------------------- */

#define STATE_HEADER 4 /* u8 version, u8 output_count, two zero bytes */
#define STATE_OUTPUT 32 /* i128 LE sum, f64 LE float sum, i64 LE count */

static const char state_label[] = "enclavesql stage state v1";

/* The key that seals this query's states of this layout: HMAC-SHA256 under the first output's
 * MAC key of the label, the query id and SHA-256(layout). A state of another query, layout or
 * key fails authentication. */
static ee_status state_keys_derive(ee_cell_keys *out, const stage_prepared *p, uint64_t query_id,
                                   size_t layout_len) {
    uint8_t message[sizeof state_label + 8 + 32], root[32];
    unsigned int root_len = 0;
    size_t at = sizeof state_label;
    memcpy(message, state_label, sizeof state_label);
    for (size_t i = 0; i < 8; i++) message[at + i] = (uint8_t)(query_id >> (8 * i));
    at += 8;
    if (EVP_Digest(p->blob, layout_len, message + at, NULL, EVP_sha256(), NULL) != 1 ||
        HMAC(EVP_sha256(), p->result_keys[0].mac_key, 32, message, sizeof message, root,
             &root_len) == NULL ||
        root_len != 32) {
        return EE_ERR_INTERNAL;
    }
    ee_status status = ee_keys_prepare(out, root);
    ee_wipe(root, sizeof root);
    return status;
}

static size_t state_len(const stage_plan *plan) {
    return STATE_HEADER + STATE_OUTPUT * plan->output_count;
}

/* Opens the states that are present and adds each into groups[o * group_count + its group]
 * (skipping a group of -1). target(i) is state_groups[i], or i when state_groups is NULL. */
static ee_status states_fold(expr_group *groups, size_t group_count, const stage_plan *plan,
                             const ee_cell_keys *keys, const ee_input *states,
                             const int64_t *state_groups) {
    ee_status status = ee_input_check(states);
    if (status != EE_OK) return status;
    ee_plain plain;
    ee_plain_init(&plain);
    size_t want = state_len(plan);
    for (size_t start = 0; start < states->count && status == EE_OK; start += CHUNK_ROWS) {
        size_t n = states->count - start < CHUNK_ROWS ? states->count - start : CHUNK_ROWS;
        status = ee_plain_load(&plain, keys, EE_TYPE_BYTES, states, start, n);
        for (size_t i = 0; i < n && status == EE_OK; i++) {
            int64_t g = state_groups != NULL ? state_groups[start + i] : (int64_t)(start + i);
            if (!plain.valid[i] || g < 0) continue;
            if ((uint64_t)g >= group_count) {
                status = EE_ERR_ARGUMENT;
                break;
            }
            size_t len;
            const uint8_t *v = ee_plain_value(&plain, i, &len);
            /* The key binds the layout, so a sealed state of the wrong shape is a forgery. */
            if (len != want || v[0] != EE_STAGE_STATE_VERSION || v[1] != plan->output_count) {
                status = EE_ERR_AUTH;
                break;
            }
            for (size_t o = 0; o < plan->output_count; o++) {
                const uint8_t *e = v + STATE_HEADER + STATE_OUTPUT * o;
                expr_group *into = &groups[o * group_count + (size_t)g];
                i128 sum = (i128)(((u128)get_le(e + 8, 8) << 64) | get_le(e, 8));
                uint64_t bits = get_le(e + 16, 8);
                double real;
                memcpy(&real, &bits, 8);
                into->float_sum += real;
                into->count += (int64_t)get_le(e + 24, 8);
                if (__builtin_add_overflow(into->sum, sum, &into->sum)) {
                    status = EE_ERR_OVERFLOW;
                    break;
                }
            }
        }
    }
    ee_plain_free(&plain);
    return status;
}

ee_status ee_enclave_stage_accumulate(
    uint8_t *out_data, size_t out_data_cap, size_t *out_data_len, int64_t *out_offsets,
    size_t out_offsets_cap, uint64_t query_id, const uint8_t *layout, size_t layout_len,
    const int32_t *offsets, size_t offsets_len, const uint8_t *data, size_t data_len,
    const uint8_t *validity, size_t validity_len, size_t validity_bit_offset, size_t count,
    const int64_t *group_ids, size_t group_ids_len, const int32_t *state_offsets,
    size_t state_offsets_len, const uint8_t *state_data, size_t state_data_len,
    const uint8_t *state_validity, size_t state_validity_len, size_t state_count,
    const int64_t *state_groups, size_t state_groups_len, size_t group_count) {
    ee_status status;
    stage_prepared prep;
    ee_cell_keys state_keys;
    uint8_t *sealed = NULL, *sealed_valid = NULL;
    int64_t *ids = NULL, *state_ids = NULL, *sealed_offsets = NULL;
    size_t sealed_cap = 0;
    stage_worker worker;
    memset(&worker, 0, sizeof worker);
    memset(&state_keys, 0, sizeof state_keys);
    ee_input in = {offsets, offsets_len, data, data_len, validity, validity_len,
                   validity_bit_offset, count};
    ee_input states = {state_offsets, state_offsets_len, state_data, state_data_len,
                       state_validity, state_validity_len, 0, state_count};

    memset(&prep, 0, sizeof prep);
    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        (state_groups == NULL && state_count > 0) || state_groups_len != state_count ||
        group_count > (size_t)INT32_MAX) {
        return EE_ERR_ARGUMENT;
    }
    status = stage_prepare(&prep, query_id, layout, layout_len);
    if (status != EE_OK) goto done;
    const stage_plan *plan = prep.plan;
    status = ee_input_check(&in);
    if (status != EE_OK) goto done;
    size_t rows = count / plan->slot_count;
    if (count % plan->slot_count != 0 || group_ids_len != rows ||
        (group_ids == NULL && rows > 0)) {
        status = EE_ERR_ARGUMENT;
        goto done;
    }
    if (out_offsets_cap < group_count + 1) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = state_keys_derive(&state_keys, &prep, query_id, layout_len);
    if (status != EE_OK) goto done;
    if (rows > 0) {
        status = ee_group_ids_copy(&ids, group_ids, rows, group_count);
        if (status != EE_OK) goto done;
    }
    if (state_count > 0) {
        status = ee_group_ids_copy(&state_ids, state_groups, state_count, group_count);
        if (status != EE_OK) goto done;
    }
    size_t cells = plan->output_count * group_count;
    worker = (stage_worker){plan, prep.slot_keys, &in, ids, rows, 0, rows, group_count, NULL, 0,
                            EE_OK};
    worker.groups_cap = (cells + 1) * sizeof *worker.groups;
    worker.groups = ee_secret_alloc(worker.groups_cap);
    if (worker.groups == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    /* The earlier states first, then the rows, in row order. */
    status = states_fold(worker.groups, group_count, plan, &state_keys, &states, state_ids);
    if (status != EE_OK) goto done;
    if (rows > 0) {
        stage_work(&worker);
        status = worker.status;
        if (status != EE_OK) goto done;
    }
    /* A sum out of DECIMAL(38) range may still come back: only the final result is checked
     * (stage_result), as in 5d. */
    size_t each = state_len(plan);
    sealed_cap = (group_count + 1) * each;
    sealed = ee_secret_alloc(sealed_cap);
    sealed_offsets = malloc((group_count + 1) * sizeof *sealed_offsets);
    sealed_valid = malloc(group_count + 1);
    if (sealed == NULL || sealed_offsets == NULL || sealed_valid == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    for (size_t g = 0; g < group_count; g++) {
        uint8_t *v = sealed + g * each;
        sealed_offsets[g] = (int64_t)(g * each);
        sealed_valid[g] = 1;
        v[0] = EE_STAGE_STATE_VERSION;
        v[1] = (uint8_t)plan->output_count;
        for (size_t o = 0; o < plan->output_count; o++) {
            const expr_group *from = &worker.groups[o * group_count + g];
            uint8_t *e = v + STATE_HEADER + STATE_OUTPUT * o;
            uint64_t bits;
            memcpy(&bits, &from->float_sum, 8);
            put_le(e, (u128)from->sum, 16);
            put_le(e + 16, bits, 8);
            put_le(e + 24, (u128)(uint64_t)from->count, 8);
        }
    }
    sealed_offsets[group_count] = (int64_t)(group_count * each);
    status = ee_encrypt_values(out_data, out_data_cap, out_data_len, out_offsets, &state_keys, 0,
                               sealed, sealed_offsets, sealed_valid, group_count);
done:
    ee_secret_free(worker.groups, worker.groups_cap);
    ee_secret_free(sealed, sealed_cap);
    ee_wipe(&state_keys, sizeof state_keys);
    stage_release(&prep);
    free(sealed_offsets);
    free(sealed_valid);
    free(ids);
    free(state_ids);
    return status;
}

ee_status ee_enclave_stage_finish(uint8_t *out_data, size_t out_data_cap, size_t *out_data_len,
                                  int64_t *out_offsets, size_t out_offsets_cap,
                                  uint64_t query_id, const uint8_t *layout, size_t layout_len,
                                  const int32_t *state_offsets, size_t state_offsets_len,
                                  const uint8_t *state_data, size_t state_data_len,
                                  const uint8_t *state_validity, size_t state_validity_len,
                                  size_t state_count) {
    ee_status status;
    stage_prepared prep;
    ee_cell_keys state_keys;
    expr_group *groups = NULL;
    size_t groups_cap = 0;
    memset(&state_keys, 0, sizeof state_keys);
    ee_input states = {state_offsets, state_offsets_len, state_data, state_data_len,
                       state_validity, state_validity_len, 0, state_count};

    memset(&prep, 0, sizeof prep);
    if (out_data_len == NULL || out_offsets == NULL || (out_data == NULL && out_data_cap > 0) ||
        state_count > (size_t)INT32_MAX) {
        return EE_ERR_ARGUMENT;
    }
    status = stage_prepare(&prep, query_id, layout, layout_len);
    if (status != EE_OK) goto done;
    const stage_plan *plan = prep.plan;
    size_t cells = plan->output_count * state_count;
    if (out_offsets_cap < cells + 1) {
        status = EE_ERR_CAPACITY;
        goto done;
    }
    status = state_keys_derive(&state_keys, &prep, query_id, layout_len);
    if (status != EE_OK) goto done;
    groups_cap = (cells + 1) * sizeof *groups;
    groups = ee_secret_alloc(groups_cap);
    if (groups == NULL) {
        status = EE_ERR_INTERNAL;
        goto done;
    }
    status = states_fold(groups, state_count, plan, &state_keys, &states, NULL);
    if (status != EE_OK) goto done;
    status = write_stage_results(out_data, out_data_cap, out_data_len, out_offsets, plan,
                                 prep.result_keys, groups, state_count);
done:
    ee_secret_free(groups, groups_cap);
    ee_wipe(&state_keys, sizeof state_keys);
    stage_release(&prep);
    return status;
}

/* enclavesql_udfs: the enclave predicate functions as a native DuckDB extension (C API v1).
 *
 * It registers __ee_filter_1 .. __ee_filter_8 and __ee_compare_columns, the same functions
 * (names, arguments, results) that engine/host/enclave_udfs.py registers as Python UDFs, so
 * DuckDB calls the enclave's ee_enclave_compare_and_views straight from its worker threads,
 * without Python or the GIL, handing it DuckDB's string vectors as they are (the enclave copies
 * each live cell in once). enclavesql_stage.inc adds the __ee_stage_k aggregates (a query
 * stage's SUM and AVG over the enclave's sealed partial states) and __ee_plain.
 *
 * This is host code, like the Python UDFs it replaces: it only hands DuckDB's vectors to the
 * enclave and the answer back. It must never decrypt, hold a key,
 * or look at cell contents, and it keeps no state between calls beyond the constants the host
 * binds (ciphertext the host holds anyway) and the first failure status of each query.
 *
 * The enclave itself is the library Python loaded (enclave._native): a second copy would have
 * its own sessions, so this file links none of it. enclave/duckdb_extension.py hands over the
 * enclave's entry points with ee_duckdb_bind and ee_duckdb_bind_stage before DuckDB loads the
 * file.
 */
#define DUCKDB_EXTENSION_NAME enclavesql_udfs
#include "duckdb_extension.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave.h"

DUCKDB_EXTENSION_EXTERN

/* Bumped when anything Python calls through cffi (below) changes. */
#define EE_DUCKDB_ABI 5
#define MAX_CONJUNCTS 8

/* Pointer types taken from the enclave's own prototypes in enclave.h: __typeof__ of a
 * declaration makes no reference to the symbol, and this file must not link against the
 * enclave. Python hands over the addresses. */
typedef __typeof__(&ee_enclave_compare_and_views) compare_and_fn;
typedef __typeof__(&ee_enclave_stage_accumulate) stage_accumulate_fn;
typedef __typeof__(&ee_enclave_stage_finish) stage_finish_fn;
/* A DuckDB string vector is an array of the enclave's string views. */
_Static_assert(sizeof(duckdb_string_t) == EE_VIEW_SIZE, "duckdb_string_t is a 16-byte view");

static compare_and_fn g_compare_and;
static stage_accumulate_fn g_stage_accumulate;
static stage_finish_fn g_stage_finish;
static uint32_t g_enclave_abi;

/* ---- Constants: ref -> blob, mirroring enclave_udfs.constant_ref ------------------------- */

/* The host's table keeps at most 4096 refs, oldest out first, and refs only grow, so the live
 * refs always lie within the last 4096 issued: twice that many slots never collide. */
#define CONSTANT_SLOTS 8192

typedef struct {
    uint64_t ref;
    uint8_t *blob;
    size_t len;
} constant_slot;

static constant_slot g_constants[CONSTANT_SLOTS];
static pthread_mutex_t g_constants_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- Failures: the first enclave status of each query, for the host's PEP 249 error ------ */

#define FAILURE_SLOTS 64

typedef struct {
    uint64_t query_id;
    int32_t status;
    int32_t kind; /* FAILURE_COMPARE or FAILURE_AGGREGATE: what the host's message names */
} failure_slot;

enum { FAILURE_COMPARE = 0, FAILURE_AGGREGATE = 1 };
/* Statuses of the extension's own (enclave statuses are >= 0 or EE_ERR_*): -1 a constant no
 * longer bound, -2 out of memory, -3 a predicate program that does not parse. */
#define FAILURE_MALFORMED_PROGRAM (-3)

static failure_slot g_failures[FAILURE_SLOTS];
static size_t g_failure_next;
static pthread_mutex_t g_failures_lock = PTHREAD_MUTEX_INITIALIZER;

static void record_failure_of(uint64_t query_id, int32_t status, int32_t kind) {
    pthread_mutex_lock(&g_failures_lock);
    int known = 0;
    for (size_t i = 0; i < FAILURE_SLOTS; i++) {
        if (g_failures[i].status != 0 && g_failures[i].query_id == query_id) {
            known = 1;
            break;
        }
    }
    if (!known) {
        g_failures[g_failure_next].query_id = query_id;
        g_failures[g_failure_next].status = status;
        g_failures[g_failure_next].kind = kind;
        g_failure_next = (g_failure_next + 1) % FAILURE_SLOTS;
    }
    pthread_mutex_unlock(&g_failures_lock);
}

static void record_failure(uint64_t query_id, int32_t status) {
    record_failure_of(query_id, status, FAILURE_COMPARE);
}

/* ---- The entry points Python calls (cffi, ABI mode) -------------------------------------- */

__attribute__((visibility("default"))) uint32_t ee_duckdb_abi(void) {
    return EE_DUCKDB_ABI;
}

/* Hands over the enclave's ee_enclave_compare_and_views (from the library Python loaded) and the
 * EE_ABI_VERSION it reports; 0 on success, -1 when the ABI differs from the one compiled in. */
__attribute__((visibility("default"))) int ee_duckdb_bind(uint32_t enclave_abi,
                                                         void *compare_and) {
    if (enclave_abi != EE_ABI_VERSION || compare_and == NULL) {
        return -1;
    }
    g_enclave_abi = enclave_abi;
    __atomic_store_n(&g_compare_and, (compare_and_fn)compare_and, __ATOMIC_RELEASE);
    return 0;
}

/* Hands over the enclave's ee_enclave_stage_accumulate and ee_enclave_stage_finish (5e), for
 * the __ee_stage_k aggregates; 0, or -1 as ee_duckdb_bind. */
__attribute__((visibility("default"))) int ee_duckdb_bind_stage(uint32_t enclave_abi,
                                                               void *accumulate, void *finish) {
    if (enclave_abi != EE_ABI_VERSION || accumulate == NULL || finish == NULL) {
        return -1;
    }
    __atomic_store_n(&g_stage_finish, (stage_finish_fn)finish, __ATOMIC_RELEASE);
    __atomic_store_n(&g_stage_accumulate, (stage_accumulate_fn)accumulate, __ATOMIC_RELEASE);
    return 0;
}

/* Stores a copy of blob under ref (replacing whatever the slot held); 0, or -1 when out of
 * memory. */
__attribute__((visibility("default"))) int ee_duckdb_put_constant(uint64_t ref,
                                                                 const uint8_t *blob,
                                                                 size_t len) {
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return -1;
    }
    if (len) {
        memcpy(copy, blob, len);
    }
    pthread_mutex_lock(&g_constants_lock);
    constant_slot *slot = &g_constants[ref % CONSTANT_SLOTS];
    free(slot->blob);
    slot->ref = ref;
    slot->blob = copy;
    slot->len = len;
    pthread_mutex_unlock(&g_constants_lock);
    return 0;
}

__attribute__((visibility("default"))) void ee_duckdb_drop_constant(uint64_t ref) {
    pthread_mutex_lock(&g_constants_lock);
    constant_slot *slot = &g_constants[ref % CONSTANT_SLOTS];
    if (slot->blob != NULL && slot->ref == ref) {
        free(slot->blob);
        slot->blob = NULL;
        slot->len = 0;
        slot->ref = 0;
    }
    pthread_mutex_unlock(&g_constants_lock);
}

/* The first failure status recorded for query_id (and forgets it), or 0; *kind says whether a
 * comparison (0) or an aggregate (1) failed. */
__attribute__((visibility("default"))) int32_t ee_duckdb_take_failure_of(uint64_t query_id,
                                                                        int32_t *kind) {
    int32_t status = 0;
    *kind = FAILURE_COMPARE;
    pthread_mutex_lock(&g_failures_lock);
    for (size_t i = 0; i < FAILURE_SLOTS; i++) {
        if (g_failures[i].status != 0 && g_failures[i].query_id == query_id) {
            status = g_failures[i].status;
            *kind = g_failures[i].kind;
            g_failures[i].status = 0;
            break;
        }
    }
    pthread_mutex_unlock(&g_failures_lock);
    return status;
}

__attribute__((visibility("default"))) int32_t ee_duckdb_take_failure(uint64_t query_id) {
    int32_t kind;
    return ee_duckdb_take_failure_of(query_id, &kind);
}

/* ---- Per-thread scratch: a copy of the call's predicate program, and the running AND ------ */

static _Thread_local uint8_t *t_program;
static _Thread_local size_t t_program_cap;
static _Thread_local uint8_t *t_state;
static _Thread_local size_t t_state_cap;

static int grow(void **buffer, size_t *cap, size_t need) {
    if (*cap >= need) {
        return 1;
    }
    size_t size = need < 4096 ? 4096 : need + need / 2;
    void *bigger = realloc(*buffer, size);
    if (bigger == NULL) {
        return 0;
    }
    *buffer = bigger;
    *cap = size;
    return 1;
}

static int row_valid(const uint64_t *validity, idx_t row) {
    return validity == NULL || ((validity[row / 64] >> (row % 64)) & 1u);
}

/* A flat BLOB vector as the enclave's string views, and its validity words as a bitmap (both
 * LSB-first bits on a little-endian host). */
typedef struct {
    const uint8_t *views;
    const uint8_t *validity;
    size_t validity_len;
} cells_arg;

static cells_arg cells_of(duckdb_vector vector, idx_t count) {
    const uint64_t *validity = duckdb_vector_get_validity(vector);
    cells_arg arg = {(const uint8_t *)duckdb_vector_get_data(vector),
                     (const uint8_t *)validity, validity ? (count + 7) / 8 : 0};
    return arg;
}

/* Copies the constant bound to ref into *buffer (a thread's scratch, grown as needed); 0 when
 * the host no longer has it (or out of memory). */
static int load_constant(uint64_t ref, uint8_t **buffer, size_t *cap, size_t *len) {
    int found = 0;
    pthread_mutex_lock(&g_constants_lock);
    const constant_slot *slot = &g_constants[ref % CONSTANT_SLOTS];
    if (slot->blob != NULL && slot->ref == ref &&
        grow((void **)buffer, cap, slot->len ? slot->len : 1)) {
        memcpy(*buffer, slot->blob, slot->len);
        *len = slot->len;
        found = 1;
    }
    pthread_mutex_unlock(&g_constants_lock);
    return found;
}

/* One predicate of a program (engine/predicate_program.py): u16 cek id, u8 type code,
 * u8 operator, u32 constant length, then the constant, all little-endian. */
typedef struct {
    uint16_t cek_id;
    int32_t type_code;
    int32_t op;
    const uint8_t *constant;
    size_t constant_len;
} predicate;

#define PREDICATE_HEADER 8

/* Splits the program in t_program[0 .. len) into exactly k predicates; 0 when it holds
 * anything else. */
static int parse_program(size_t len, idx_t k, predicate *out) {
    size_t at = 0;
    for (idx_t p = 0; p < k; p++) {
        if (len - at < PREDICATE_HEADER) {
            return 0;
        }
        const uint8_t *h = t_program + at;
        uint32_t constant_len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
                                (uint32_t)h[7] << 24;
        at += PREDICATE_HEADER;
        if (len - at < constant_len) {
            return 0;
        }
        out[p].cek_id = (uint16_t)(h[0] | h[1] << 8);
        out[p].type_code = h[2];
        out[p].op = h[3];
        out[p].constant = t_program + at;
        out[p].constant_len = constant_len;
        at += constant_len;
    }
    return at == len;
}

/* Row 0 of a bound-parameter vector (query id, codes, refs: one value per call). */
static int first_u64(duckdb_vector vector, uint64_t *out) {
    const uint64_t *validity = duckdb_vector_get_validity(vector);
    if (!row_valid(validity, 0)) {
        return 0;
    }
    *out = ((const uint64_t *)duckdb_vector_get_data(vector))[0];
    return 1;
}

static int first_i32(duckdb_vector vector, int32_t *out) {
    const uint64_t *validity = duckdb_vector_get_validity(vector);
    if (!row_valid(validity, 0)) {
        return 0;
    }
    *out = ((const int32_t *)duckdb_vector_get_data(vector))[0];
    return 1;
}

/* The thread's state bytes as DuckDB booleans: EE_TRUE true, EE_FALSE false, EE_NULL NULL. */
static void write_answer(duckdb_vector output, idx_t count) {
    bool *result = (bool *)duckdb_vector_get_data(output);
    uint64_t *result_validity = NULL;
    for (idx_t i = 0; i < count; i++) {
        result[i] = t_state[i] == EE_TRUE;
        if (t_state[i] == EE_NULL) {
            if (result_validity == NULL) {
                duckdb_vector_ensure_validity_writable(output);
                result_validity = duckdb_vector_get_validity(output);
            }
            duckdb_validity_set_row_invalid(result_validity, i);
        }
    }
}

static void refuse(duckdb_function_info info, uint64_t query_id, ee_status status) {
    record_failure(query_id, (int32_t)status);
    char message[96];
    snprintf(message, sizeof message,
             "enclavesql_udfs: the enclave refused a comparison (status %d)", (int)status);
    duckdb_scalar_function_set_error(info, message);
}

/* ---- __ee_filter_k(cells_1 .. cells_k, query_id, program ref) --------------------------- */

static void filter(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output) {
    const idx_t k = (idx_t)(uintptr_t)duckdb_scalar_function_get_extra_info(info);
    const idx_t count = duckdb_data_chunk_get_size(input);
    if (count == 0) {
        return;
    }
    compare_and_fn compare_and = __atomic_load_n(&g_compare_and, __ATOMIC_ACQUIRE);
    if (compare_and == NULL) {
        duckdb_scalar_function_set_error(
            info, "enclavesql_udfs: the enclave was not bound before the extension ran");
        return;
    }
    uint64_t query_id, ref;
    if (!first_u64(duckdb_data_chunk_get_vector(input, k), &query_id) ||
        !grow((void **)&t_state, &t_state_cap, count)) {
        duckdb_scalar_function_set_error(info, "enclavesql_udfs: a NULL query id or no memory");
        return;
    }
    size_t program_len = 0;
    predicate predicates[MAX_CONJUNCTS];
    if (!first_u64(duckdb_data_chunk_get_vector(input, k + 1), &ref)) {
        record_failure(query_id, EE_ERR_ARGUMENT);
        duckdb_scalar_function_set_error(info, "enclavesql_udfs: a NULL predicate program");
        return;
    }
    if (!load_constant(ref, &t_program, &t_program_cap, &program_len)) {
        record_failure(query_id, -1);
        duckdb_scalar_function_set_error(
            info, "enclavesql_udfs: a predicate program is no longer bound; run it again");
        return;
    }
    if (!parse_program(program_len, k, predicates)) {
        record_failure(query_id, FAILURE_MALFORMED_PROGRAM);
        duckdb_scalar_function_set_error(info, "enclavesql_udfs: a malformed predicate program");
        return;
    }
    memset(t_state, EE_TRUE, count);
    for (idx_t p = 0; p < k; p++) {
        const predicate *q = &predicates[p];
        /* Rows a previous conjunct made FALSE are skipped by the enclave, their cells unread. */
        cells_arg cells = cells_of(duckdb_data_chunk_get_vector(input, p), count);
        ee_status status = compare_and(t_state, count, query_id, q->cek_id, q->type_code, q->op,
                                       q->constant, q->constant_len, cells.views,
                                       count * EE_VIEW_SIZE, cells.validity, cells.validity_len,
                                       0, count, NULL, 0, NULL, 0, 0, 0);
        if (status != EE_OK) {
            refuse(info, query_id, status);
            return;
        }
    }
    write_answer(output, count);
}

/* ---- __ee_compare_columns(left, right, query_id, cek, type, op): EQ..GE of two columns -- */

static void compare_columns(duckdb_function_info info, duckdb_data_chunk input,
                            duckdb_vector output) {
    const idx_t count = duckdb_data_chunk_get_size(input);
    if (count == 0) {
        return;
    }
    compare_and_fn compare_and = __atomic_load_n(&g_compare_and, __ATOMIC_ACQUIRE);
    uint64_t query_id;
    int32_t cek_id, type_code, op;
    if (compare_and == NULL || !first_u64(duckdb_data_chunk_get_vector(input, 2), &query_id) ||
        !grow((void **)&t_state, &t_state_cap, count)) {
        duckdb_scalar_function_set_error(info, "enclavesql_udfs: unbound, a NULL query id or no memory");
        return;
    }
    if (!first_i32(duckdb_data_chunk_get_vector(input, 3), &cek_id) ||
        !first_i32(duckdb_data_chunk_get_vector(input, 4), &type_code) ||
        !first_i32(duckdb_data_chunk_get_vector(input, 5), &op) || cek_id < 0 ||
        cek_id > UINT16_MAX) {
        record_failure(query_id, EE_ERR_ARGUMENT);
        duckdb_scalar_function_set_error(info, "enclavesql_udfs: a malformed predicate code");
        return;
    }
    cells_arg left = cells_of(duckdb_data_chunk_get_vector(input, 0), count);
    cells_arg right = cells_of(duckdb_data_chunk_get_vector(input, 1), count);
    memset(t_state, EE_TRUE, count);
    ee_status status = compare_and(t_state, count, query_id, (uint16_t)cek_id, type_code, op,
                                   NULL, 0, left.views, count * EE_VIEW_SIZE, left.validity,
                                   left.validity_len, 0, count, right.views,
                                   count * EE_VIEW_SIZE, right.validity, right.validity_len, 0,
                                   count);
    if (status != EE_OK) {
        refuse(info, query_id, status);
        return;
    }
    write_answer(output, count);
}

/* Registers one BOOLEAN scalar function over parameters of the given types. `special`: NULL
 * arguments reach the function (DuckDB would otherwise answer NULL without calling it). */
static int register_scalar(duckdb_connection connection, const char *name,
                           const DUCKDB_TYPE *types, idx_t count, duckdb_scalar_function_t body,
                           int special, idx_t extra) {
    duckdb_scalar_function function = duckdb_create_scalar_function();
    duckdb_scalar_function_set_name(function, name);
    for (idx_t i = 0; i < count; i++) {
        duckdb_logical_type type = duckdb_create_logical_type(types[i]);
        duckdb_scalar_function_add_parameter(function, type);
        duckdb_destroy_logical_type(&type);
    }
    duckdb_logical_type boolean = duckdb_create_logical_type(DUCKDB_TYPE_BOOLEAN);
    duckdb_scalar_function_set_return_type(function, boolean);
    duckdb_destroy_logical_type(&boolean);
    if (special) {
        duckdb_scalar_function_set_special_handling(function);
    }
    duckdb_scalar_function_set_extra_info(function, (void *)(uintptr_t)extra, NULL);
    duckdb_scalar_function_set_function(function, body);
    duckdb_state state = duckdb_register_scalar_function(connection, function);
    duckdb_destroy_scalar_function(&function);
    return state == DuckDBSuccess;
}

/* __ee_filter_k: k BLOB cells, UBIGINT query id, UBIGINT predicate program ref.
 * NULL cells must reach the enclave: FALSE AND NULL is FALSE. */
static int register_filter(duckdb_connection connection, idx_t k) {
    DUCKDB_TYPE types[MAX_CONJUNCTS + 2];
    idx_t n = 0;
    for (idx_t i = 0; i < k; i++) types[n++] = DUCKDB_TYPE_BLOB;
    types[n++] = DUCKDB_TYPE_UBIGINT;
    types[n++] = DUCKDB_TYPE_UBIGINT;
    char name[32];
    snprintf(name, sizeof name, "__ee_filter_%u", (unsigned)k);
    return register_scalar(connection, name, types, n, filter, 1, k);
}

static int register_compare_columns(duckdb_connection connection) {
    static const DUCKDB_TYPE types[] = {DUCKDB_TYPE_BLOB,    DUCKDB_TYPE_BLOB,
                                        DUCKDB_TYPE_UBIGINT, DUCKDB_TYPE_INTEGER,
                                        DUCKDB_TYPE_INTEGER, DUCKDB_TYPE_INTEGER};
    return register_scalar(connection, "__ee_compare_columns", types, 6, compare_columns, 0, 0);
}

#include "enclavesql_stage.inc"

DUCKDB_EXTENSION_ENTRYPOINT(duckdb_connection connection, duckdb_extension_info info,
                            struct duckdb_extension_access *access) {
    for (idx_t k = 1; k <= MAX_CONJUNCTS; k++) {
        if (!register_filter(connection, k)) {
            access->set_error(info, "enclavesql_udfs: registering __ee_filter_k failed");
            return false;
        }
    }
    if (!register_compare_columns(connection)) {
        access->set_error(info, "enclavesql_udfs: registering __ee_compare_columns failed");
        return false;
    }
    if (!register_stage_functions(connection)) {
        access->set_error(info, "enclavesql_udfs: registering __ee_stage_k or __ee_plain failed");
        return false;
    }
    return true;
}

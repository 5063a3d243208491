"""Turns the results of the separately written suites (enclave operators, SQL layer, rotation)
into rows of the one result shape, so that their figures land in the same table, JSON, chart
and targets as the TPC-H cases. It converts numbers only: it runs, times and decides nothing.
"""

from __future__ import annotations

from typing import Any

from bench.report import Row, make_row, unsupported_row

ENCLAVE_OPERATORS = (
    ("decrypt_only", "codec_decrypt_only"),
    ("compare_lt", "enclave_lt"),
    ("like", "enclave_like"),
    ("sum", "enclave_sum"),
)


def _rate_row(case: str, variant: str, cells: int, per_second: float, note: str) -> Row:
    """A row from a throughput: the seconds `cells` take at `per_second`. The suites report a
    median rate only, so min and max repeat the median.

    >>> _rate_row("c", "v", 1000, 2000.0, "")["median_s"]
    0.5
    """
    return make_row(case, variant, [cells / per_second], cells, note)


def enclave_ops_rows(result: dict[str, Any]) -> list[Row]:
    """bench.enclave_ops results: per plaintext width, the codec decrypting the cells and each
    operator over the very same cells (so ratio_vs_floor is operator time / decrypt time).

    >>> result = {"cells": 1000, "codec": "aesni-shani", "results": {"8_byte": {
    ...     "decrypt_only": 10.0, "compare_lt": 8.0, "like": 5.0, "sum": None}}}
    >>> [(row["case"], row["variant"]) for row in enclave_ops_rows(result)][:2]
    [('enclave_ops_8b', 'codec_decrypt_only'), ('enclave_ops_8b', 'enclave_lt')]
    """
    rows = []
    cells = int(result["cells"])
    for width, measured in result["results"].items():
        case = f"enclave_ops_{width.removesuffix('_byte')}b"
        for key, variant in ENCLAVE_OPERATORS:
            rate = measured.get(key)
            if rate is None:
                continue  # SUM is measured on 8-byte integers only
            note = f"{rate:.3g} M cells/s, {width.replace('_', ' ')} cells, one thread"
            rows.append(_rate_row(case, variant, cells, rate * 1e6, f"{note} ({result['codec']})"))
    return rows


def sql_layer_rows(result: dict[str, Any]) -> list[Row]:
    """bench.sql_layer results as plaintext / enclavesql pairs (milliseconds and rows/s).

    >>> result = {"rows": 1000, "bulk_insert_rows_per_s": 500, "plaintext_insert_rows_per_s": 1000,
    ...     "bulk_insert_file_rows_per_s": 250, "plaintext_insert_file_rows_per_s": 1000,
    ...     "point_lookup_p50_ms": 2.0, "plaintext_point_lookup_p50_ms": 1.0,
    ...     "unique_lookup_p50_ms": 1.0, "plaintext_unique_lookup_p50_ms": 0.5,
    ...     "small_query_p50_ms": 0.9, "plaintext_small_query_p50_ms": 0.3}
    >>> rows = sql_layer_rows(result)
    >>> [row["median_s"] for row in rows if row["case"] == "sql_bulk_insert"]
    [1.0, 2.0]
    """
    total = int(result["rows"])
    rows = []
    inserts = (
        ("sql_bulk_insert", "", "in-memory DuckDB"),
        ("sql_bulk_insert_file", "_file", "DuckDB file"),
    )
    for case, suffix, where in inserts:
        note = f"{where}; 4 encrypted columns (1 det., 3 rnd.) of 5"
        for variant, key in (
            ("plaintext", f"plaintext_insert{suffix}_rows_per_s"),
            ("enclavesql", f"bulk_insert{suffix}_rows_per_s"),
        ):
            rows.append(_rate_row(case, variant, total, float(result[key]), note))
    lookups = (
        ("sql_point_lookup", "point_lookup", total, "p50, det. ssn = ?, no index"),
        ("sql_unique_lookup", "unique_lookup", total, "p50, det. ssn = ?, UNIQUE (ART index)"),
        ("sql_small_query", "small_query", 1000, "p50, id = ?, warm describe cache"),
    )
    for case, key, size, note in lookups:
        for variant, field in (
            ("plaintext", f"plaintext_{key}_p50_ms"),
            ("enclavesql", f"{key}_p50_ms"),
        ):
            rows.append(make_row(case, variant, [float(result[field]) / 1e3], size, note))
    return rows


def rotation_rows(result: dict[str, Any]) -> list[Row]:
    """bench.rotation results: the re-encryption kernel (enclave vs client codec, same cells)
    and a whole column rotated by engine.rotation.rotate_cek on each path.

    >>> result = {"rows": 100, "cell_plaintext": "VARCHAR(24)",
    ...     "kernel_rows_per_second": {"enclave_reencrypt": 50, "client_decrypt_encrypt": 100},
    ...     "table_rows_per_second": {"client": 20, "enclave": 25}}
    >>> [(row["case"], row["variant"], row["median_s"]) for row in rotation_rows(result)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('rotation_kernel', 'enclave_reencrypt', 2.0), ('rotation_kernel', 'native_codec', 1.0),
     ('rotation_table', 'enclavesql', 4.0), ('rotation_table', 'client_path', 5.0)]
    """
    total = int(result["rows"])
    cells = result.get("cell_plaintext", "")
    kernel = result["kernel_rows_per_second"]
    table = result["table_rows_per_second"]
    return [
        _rate_row(
            "rotation_kernel",
            "enclave_reencrypt",
            total,
            kernel["enclave_reencrypt"],
            f"enclave REENCRYPT, one call, {cells}",
        ),
        _rate_row(
            "rotation_kernel",
            "native_codec",
            total,
            kernel["client_decrypt_encrypt"],
            f"client codec decrypt+encrypt, {cells}",
        ),
        _rate_row(
            "rotation_table",
            "enclavesql",
            total,
            table["enclave"],
            "rotate_cek, enclave path, whole column in place",
        ),
        _rate_row(
            "rotation_table",
            "client_path",
            total,
            table["client"],
            "rotate_cek, client path, whole column in place",
        ),
    ]


def failed_suite_row(suite: str, error: BaseException) -> Row:
    """A suite that could not run leaves one row saying so, never a gap.

    >>> failed_suite_row("rotation", RuntimeError("no enclave"))["note"]
    'not measured: the rotation suite failed: RuntimeError: no enclave'
    """
    why = f"not measured: the {suite} suite failed: {type(error).__name__}: " + " ".join(
        str(error).split()
    )
    return unsupported_row(suite, "enclavesql", 0, why)

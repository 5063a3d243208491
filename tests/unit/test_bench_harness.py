"""The benchmark harness without the benchmark: row shape, ratios, targets, JSON, table, chart.

Every result here is synthetic; no test times anything or runs a benchmark case.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import baselines, report, tpch
from bench.__main__ import codec_rows, parse_args

MACHINE = {"cpu_model": "test cpu", "cpu_flags": {"aes": True}, "cores": 2}
WHEN = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _codec(fast: float | None = 12.0, pyca: float = 0.2) -> dict:
    results = {
        "portable": {
            "implementation": "openssl",
            "cells": 1000,
            "decrypt": {"median": 4.0, "min": 3.0, "max": 5.0},
            "encrypt_randomized": {"median": 4.0, "min": 3.0, "max": 5.0},
        },
        "pyca": {
            "implementation": "pyca loop",
            "cells": 100,
            "decrypt": {"median": pyca, "min": pyca, "max": pyca},
            "encrypt_randomized": {"median": pyca, "min": pyca, "max": pyca},
        },
    }
    if fast is not None:
        results["fast"] = {
            "implementation": "aesni-shani",
            "cells": 1000,
            "decrypt": {"median": fast, "min": fast, "max": fast},
            "encrypt_randomized": {"median": 8.0, "min": 8.0, "max": 8.0},
        }
    return {"results": results}


def _rows(*specs: tuple[str, str, float, int]) -> list[dict]:
    return [
        report.make_row(case, variant, [seconds], rows) for case, variant, seconds, rows in specs
    ]


def _target(targets: list[dict], start: str) -> dict:
    (found,) = [target for target in targets if target["figure"].startswith(start)]
    return found


def test_rows_have_exactly_the_row_schema() -> None:
    row = report.make_row("q6", "plaintext", [0.3, 0.1, 0.2, 0.4], 600)
    assert tuple(row) == report.ROW_FIELDS
    assert (row["median_s"], row["min_s"], row["max_s"]) == (0.25, 0.1, 0.4)


def test_a_row_needs_a_timing() -> None:
    with pytest.raises(ValueError, match="at least one timing"):
        report.make_row("q6", "plaintext", [], 600)


def test_extrapolation_scales_every_statistic() -> None:
    row = report.make_row("q1", "client_pyca", [1.0, 2.0, 3.0], 600, scale=30.0)
    assert (row["median_s"], row["min_s"], row["max_s"]) == (60.0, 30.0, 90.0)


def test_ratios_compare_within_one_case_and_one_size() -> None:
    rows = report.add_ratios(
        _rows(
            ("q6", "plaintext", 0.1, 100),
            ("q6", "client_pyca", 3.0, 100),
            ("q6", "plaintext", 0.4, 200),
            ("q6", "client_pyca", 2.0, 200),
            ("q1", "client_pyca", 1.0, 100),
        )
    )
    ratios = [row["ratio_vs_plaintext"] for row in rows]
    assert ratios[:4] == pytest.approx([1.0, 30.0, 1.0, 5.0])
    assert ratios[4] is None  # q1 has no plaintext row


def test_the_floor_is_the_udf_floor_where_measured_else_the_codec_floor() -> None:
    rows = report.add_ratios(
        _rows(
            ("range_1pct", "udf_floor", 0.5, 100),
            ("range_1pct", "codec_floor", 0.1, 100),
            ("range_1pct", "client_pyca", 5.0, 100),
            ("q1", "codec_floor", 0.25, 100),
            ("q1", "client_pyca", 5.0, 100),
            ("join", "client_pyca", 5.0, 100),
        )
    )
    floors = {(row["case"], row["variant"]): row["ratio_vs_floor"] for row in rows}
    assert floors[("range_1pct", "client_pyca")] == pytest.approx(10.0)
    assert floors[("q1", "client_pyca")] == pytest.approx(20.0)
    assert floors[("join", "client_pyca")] is None


@given(
    measured=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    threshold=st.floats(min_value=0.01, max_value=1e6, allow_nan=False),
    op=st.sampled_from([">=", "<="]),
)
def test_a_target_is_decided_by_its_number(measured: float, threshold: float, op: str) -> None:
    outcome = report.evaluate("figure", op, threshold, measured)
    assert outcome["met"] is (measured >= threshold if op == ">=" else measured <= threshold)
    assert outcome["target"] == f"{op} {threshold:g}"
    if not outcome["met"]:
        assert outcome["reason"].startswith("missed")


@given(op=st.sampled_from([">=", "<="]), threshold=st.floats(min_value=0, max_value=1e6))
def test_a_missing_measurement_is_never_met(op: str, threshold: float) -> None:
    outcome = report.evaluate("figure", op, threshold, None)
    assert outcome["met"] is None
    assert outcome["measured"] is None
    assert outcome["reason"] == report.NOT_YET


def test_an_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match=">= or <="):
        report.evaluate("figure", "==", 1, 1.0)


def test_targets_without_their_rows_are_not_measured_and_say_which_row() -> None:
    rows = _rows(("q6", "plaintext", 0.1, 100), ("q6", "client_pyca", 9.0, 100))
    targets = report.evaluate_targets(rows, _codec(), sf=0.1)
    assert len(targets) == len(report.TARGETS)
    assert all(tuple(target) == report.TARGET_FIELDS for target in targets)
    codec_figures = [target for target in targets if target["figure"].startswith("codec")]
    assert [target["met"] for target in codec_figures] == [True, True]
    for target in targets:
        if target not in codec_figures:
            assert target["met"] is None and target["measured"] is None
            assert target["reason"].startswith("not measured in this run (no ")
    q6 = _target(targets, "TPC-H Q6 (x plaintext)")
    assert "no q6 enclavesql row" in q6["reason"]


def test_no_row_at_all_decides_no_target() -> None:
    for target in report.evaluate_targets([], None, sf=1):
        assert target["met"] is None and target["measured"] is None
        assert target["reason"]


def test_codec_targets_follow_the_codec_numbers() -> None:
    targets = report.evaluate_targets([], _codec(fast=6.0, pyca=0.2), sf=0.1)
    assert _target(targets, "codec decrypt")["met"] is False
    assert _target(targets, "codec decrypt")["measured"] == 6.0
    assert _target(targets, "codec fast path over")["measured"] == pytest.approx(30.0)
    assert _target(targets, "codec fast path over")["met"] is False
    without_fast = report.evaluate_targets([], _codec(fast=None), sf=0.1)
    assert _target(without_fast, "codec decrypt")["met"] is None
    no_codec = report.evaluate_targets([], None, sf=0.1)
    assert [target["met"] for target in no_codec[:2]] == [None, None]
    assert all("did not run" in target["reason"] for target in no_codec[:2])


def test_enclavesql_rows_decide_the_query_targets() -> None:
    rows = _rows(
        ("q6", "plaintext", 0.1, 100),
        ("q6", "enclavesql", 3.0, 100),
        ("q6", "client_pyca", 30.0, 100),
        ("point_lookup", "plaintext", 0.001, 10),
        ("point_lookup", "enclavesql", 0.0025, 10),
        ("bulk_load", "enclavesql", 2.0, 1_000_000),
    )
    targets = report.evaluate_targets(rows, _codec(), sf=1)
    q6 = _target(targets, "TPC-H Q6 (x plaintext)")
    assert (q6["measured"], q6["met"]) == (pytest.approx(30.0), True)
    speedup = _target(targets, "TPC-H Q6 speed-up")
    assert (speedup["measured"], speedup["met"]) == (pytest.approx(10.0), False)
    assert "missed" in speedup["reason"]
    lookup = _target(targets, "deterministic point lookup")
    assert (lookup["measured"], lookup["met"]) == (pytest.approx(2.5), False)
    small = _target(targets, "warm small query")
    assert (small["measured"], small["met"]) == (pytest.approx(1.5), False)
    bulk = _target(targets, "bulk load")
    assert (bulk["measured"], bulk["met"]) == (pytest.approx(0.5), False)
    assert _target(targets, "in-place re-encryption")["met"] is None


def test_the_range_target_is_only_decided_at_scale_factor_one() -> None:
    rows = _rows(
        ("range_1pct", "udf_floor", 1.0, 100),
        ("range_1pct", "enclavesql", 1.2, 100),
        ("range_50pct", "udf_floor", 1.0, 100),
        ("range_50pct", "enclavesql", 1.4, 100),
    )
    at_sf1 = _target(report.evaluate_targets(rows, None, sf=1), "randomized range")
    assert (at_sf1["measured"], at_sf1["met"]) == (pytest.approx(1.4), True)
    at_small = _target(report.evaluate_targets(rows, None, sf=0.1), "randomized range")
    assert at_small["measured"] == pytest.approx(1.4)
    assert at_small["met"] is None
    assert "SF 1" in at_small["reason"]


def test_the_q6_target_is_only_decided_at_scale_factor_one() -> None:
    # Q6's ratio to plaintext shrinks with the scale (fixed costs), so SF 0.1 must not pass it.
    rows = _rows(("q6", "plaintext", 0.1, 100), ("q6", "enclavesql", 3.0, 100))
    at_sf1 = _target(report.evaluate_targets(rows, None, sf=1), "TPC-H Q6 (x plaintext)")
    assert (at_sf1["measured"], at_sf1["met"]) == (pytest.approx(30.0), True)
    at_small = _target(report.evaluate_targets(rows, None, sf=0.1), "TPC-H Q6 (x plaintext)")
    assert at_small["measured"] == pytest.approx(30.0)
    assert at_small["met"] is None
    assert "SF 1" in at_small["reason"]


def test_reencryption_is_the_whole_table_against_the_codec_on_the_same_cells() -> None:
    # The client codec decrypts and encrypts the cells in 1 s; rotating the column takes 2 s.
    rows = _rows(
        ("rotation_kernel", "native_codec", 1.0, 1000),
        ("rotation_kernel", "enclave_reencrypt", 0.8, 1000),
        ("rotation_table", "enclavesql", 2.0, 1000),
    )
    target = _target(report.evaluate_targets(rows, _codec(), sf=0.1), "in-place re-encryption")
    assert target["measured"] == pytest.approx(50.0)
    assert target["met"] is False
    assert "kernel alone runs at 125%" in target["reason"]
    faster = _rows(
        ("rotation_kernel", "native_codec", 1.0, 1000), ("rotation_table", "enclavesql", 1.5, 1000)
    )
    assert _target(report.evaluate_targets(faster, None, sf=0.1), "in-place")["met"] is True


def test_enclave_operators_are_decided_from_the_worst_width() -> None:
    rows = _rows(
        ("enclave_ops_8b", "codec_decrypt_only", 1.0, 1000),
        ("enclave_ops_8b", "enclave_lt", 1.1, 1000),
        ("enclave_ops_32b", "codec_decrypt_only", 1.0, 1000),
        ("enclave_ops_32b", "enclave_lt", 1.6, 1000),
    )
    target = _target(report.evaluate_targets(rows, None, sf=0.1), "enclave comparison ops")
    assert target["measured"] == pytest.approx(62.5)
    assert target["met"] is False and "enclave_ops_32b" in target["reason"]
    # With one width missing, a good figure decides nothing; the missing width could be worse.
    half = _target(report.evaluate_targets(rows[:2], None, sf=0.1), "enclave comparison ops")
    assert half["measured"] == pytest.approx(100 / 1.1) and half["met"] is None
    assert "no enclave_ops_32b codec_decrypt_only row" in half["reason"]
    bad = _target(report.evaluate_targets(rows[2:], None, sf=0.1), "enclave comparison ops")
    assert bad["met"] is False  # already below the target, whatever the other width does


def test_a_target_over_several_cases_takes_the_worst_one() -> None:
    rows = _rows(
        ("point_lookup", "plaintext", 0.001, 10),
        ("point_lookup", "enclavesql", 0.0012, 10),
        ("sql_point_lookup", "plaintext", 0.001, 10),
        ("sql_point_lookup", "enclavesql", 0.003, 10),
        ("bulk_load", "enclavesql", 0.5, 1_000_000),
        ("sql_bulk_insert", "enclavesql", 2.0, 1_000_000),
    )
    targets = report.evaluate_targets(rows, None, sf=0.1)
    lookup = _target(targets, "deterministic point lookup")
    assert lookup["measured"] == pytest.approx(3.0) and lookup["met"] is False
    assert "sql_point_lookup" in lookup["reason"]
    bulk = _target(targets, "bulk load")
    assert bulk["measured"] == pytest.approx(0.5) and bulk["met"] is False
    assert "from sql_bulk_insert" in bulk["reason"]


def test_an_unsupported_variant_is_a_row_and_decides_nothing() -> None:
    why = "NotSupportedError: lineitem.l_extendedprice is encrypted; arithmetic (*) is refused"
    rows = _rows(("q6", "plaintext", 0.1, 100), ("q6", "client_pyca", 9.0, 100))
    rows.append(report.unsupported_row("q6", "enclavesql", 100, why))
    result = report.build_result(
        rows, _codec(), sf=1, quick=False, repeat=1, machine=MACHINE, command="x", when=WHEN
    )
    (refused,) = [row for row in result["rows"] if row["variant"] == "enclavesql"]
    assert tuple(refused) == report.ROW_FIELDS
    assert refused["median_s"] is None and refused["ratio_vs_plaintext"] is None
    for figure in ("TPC-H Q6 (x plaintext)", "TPC-H Q6 speed-up"):
        target = _target(result["targets"], figure)
        assert target["met"] is None and target["measured"] is None
        assert target["reason"] == f"q6: not supported yet: {why}"
    text = report.format_table(result["rows"], result["targets"])
    (line,) = [line for line in text.splitlines() if line.startswith("q6") and "enclavesql" in line]
    assert f"not supported yet: {why}" in line
    assert any(
        line.startswith("TPC-H Q6 (x plaintext)") and "not measured (q6: not supported" in line
        for line in text.splitlines()
    )


def _result(tmp_rows: list[dict] | None = None, **kinds: bool) -> dict:
    rows = tmp_rows or _rows(
        ("q6", "plaintext", 0.01, 100),
        ("q6", "udf_floor", 0.02, 100),
        ("q6", "client_pyca", 1.0, 100),
        ("q6", "plaintext", 0.02, 200),
        ("q6", "udf_floor", 0.04, 200),
        ("q6", "client_pyca", 2.0, 200),
        ("q6", "plaintext", 0.04, 400),
        ("q6", "udf_floor", 0.08, 400),
        ("q6", "client_pyca", 4.0, 400),
        ("reencrypt", "codec_floor", 0.01, 400),
        ("reencrypt", "native_codec", 0.02, 400),
    )
    return report.build_result(
        rows,
        _codec(),
        sf=0.01,
        quick=kinds.get("quick", False),
        partial=kinds.get("partial", False),
        repeat=2,
        machine=MACHINE,
        command="python -m bench --sf 0.01",
        when=WHEN,
    )


def test_the_json_has_rows_targets_and_the_machine(tmp_path) -> None:
    path = report.write_json(_result(), tmp_path)
    assert path.name == "2026-11-29-sf0.01.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["machine"] == MACHINE
    assert stored["sf"] == 0.01 and stored["repeat"] == 2
    assert all(tuple(row) == report.ROW_FIELDS for row in stored["rows"])
    assert len(stored["targets"]) == len(report.TARGETS)
    q6_pyca = [r for r in stored["rows"] if r["variant"] == "client_pyca" and r["rows"] == 400]
    assert q6_pyca[0]["ratio_vs_plaintext"] == pytest.approx(100.0)
    assert q6_pyca[0]["ratio_vs_floor"] == pytest.approx(50.0)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_row_with_a_field_too_many_is_refused() -> None:
    row = report.make_row("q6", "plaintext", [0.1], 100)
    row["extra"] = 1
    with pytest.raises(ValueError, match="extra"):
        _result([row])


def test_the_table_shows_every_row_and_every_target_status() -> None:
    rows = _rows(
        ("q6", "plaintext", 0.1, 100),
        ("q6", "enclavesql", 5.0, 100),
        ("order_by_limit", "client_pyca", 1.5, 100),
    )
    rows[2]["note"] = "extrapolated from 10 rows"
    result = report.build_result(
        rows, _codec(), sf=1, quick=False, repeat=1, machine=MACHINE, command="x", when=WHEN
    )
    text = report.format_table(result["rows"], result["targets"])
    lines = text.splitlines()
    assert any(line.split()[:2] == ["order_by_limit", "client_pyca"] for line in lines)
    assert "extrapolated from 10 rows" in text
    assert "50x" in text  # q6 enclavesql against plaintext
    q6_target = next(line for line in lines if line.startswith("TPC-H Q6 (x plaintext)"))
    assert "MISSED" in q6_target and "50" in q6_target
    assert any("codec decrypt" in line and line.rstrip().endswith("met") for line in lines)
    bulk = next(line for line in lines if line.startswith("bulk load"))
    assert "  not measured in this run (no bulk_load enclavesql row" in bulk


def test_the_chart_is_a_non_empty_png(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the test and bench extras")
    from bench import chart

    result = _result()
    result["rows"] += report.add_ratios(codec_rows(_codec()))
    written = chart.write_chart(result, tmp_path)
    assert [path.name for path in written] == ["latest.png", "2026-11-29-sf0.01.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert not list(tmp_path.glob("*.tmp"))


def test_the_chart_copes_with_no_ratios(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the test and bench extras")
    from bench import chart

    result = _result(_rows(("reencrypt", "native_codec", 0.02, 400)))
    (latest, _) = chart.write_chart(result, tmp_path)
    assert latest.stat().st_size > 0


def test_quick_and_partial_runs_never_replace_the_full_run(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the test and bench extras")
    from bench import chart

    quick, partial = _result(quick=True), _result(partial=True)
    assert report.write_json(quick, tmp_path).name == "2026-11-29-sf0.01-quick.json"
    assert report.write_json(partial, tmp_path).name == "2026-11-29-sf0.01-partial.json"
    assert [p.name for p in chart.write_chart(quick, tmp_path)] == ["2026-11-29-sf0.01-quick.png"]
    assert not (tmp_path / "latest.png").exists()


def test_codec_rates_become_rows_of_seconds() -> None:
    rows = codec_rows(_codec(fast=10.0))
    fast = next(r for r in rows if r["case"] == "codec_decrypt" and r["variant"] == "codec_fast")
    assert fast["median_s"] == pytest.approx(1000 / 10e6)
    assert fast["rows"] == 1000
    assert {row["case"] for row in rows} == {"codec_decrypt", "codec_encrypt"}


def test_the_codec_floor_adds_decrypt_and_encrypt_time() -> None:
    cells = {("reencrypt", 100): (1_200_000, 800_000), ("join", 100): (0, 0)}
    (row,) = baselines.codec_floor_rows(cells, _codec(fast=12.0))
    assert row["case"] == "reencrypt" and row["variant"] == "codec_floor"
    assert row["median_s"] == pytest.approx(0.1 + 0.1)


def test_the_command_line_defaults_and_errors() -> None:
    full = parse_args([])
    assert (full.sf, full.repeat, full.pyca_sample, full.quick) == (0.1, 5, 20_000, False)
    assert set(full.only) == {
        "codec",
        "enclave_ops",
        "sql_layer",
        "rotation",
        *baselines.CASE_NAMES,
    }
    assert not full.no_enclavesql and parse_args(["--no-enclavesql"]).no_enclavesql
    assert parse_args(["--sf", "1", "--repeat", "3"]).sf == 1.0
    with pytest.raises(SystemExit):
        parse_args(["--only", "q7"])
    with pytest.raises(SystemExit):
        parse_args(["--repeat", "0"])


@given(total=st.integers(min_value=1, max_value=10**9), count=st.integers(1, 6))
def test_growth_sizes_end_at_the_full_table(total: int, count: int) -> None:
    sizes = tpch.sizes(total, count)
    assert len(sizes) == count and sizes[-1] == total
    assert sizes == sorted(sizes) and sizes[0] >= 1


def test_first_rows_takes_the_same_rows_of_plaintext_and_encrypted_tables() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE lineitem AS SELECT range AS l_rowid, range * 2 AS v FROM range(50)")
    con.execute("CREATE TABLE lineitem_enc AS SELECT * FROM lineitem ORDER BY l_rowid DESC")
    plain, encrypted = tpch.first_rows(con, "lineitem", 7), tpch.first_rows(con, "lineitem_enc", 7)
    assert (plain, encrypted) == ("lineitem_7", "lineitem_enc_7")
    query = "SELECT l_rowid, v FROM {} ORDER BY l_rowid"
    expected = [(i, 2 * i) for i in range(7)]
    assert con.execute(query.format(plain)).fetchall() == expected
    assert con.execute(query.format(encrypted)).fetchall() == expected


def test_bench_keys_stay_out_of_their_repr(tmp_path) -> None:
    keys = tpch.load_keys(tmp_path)
    assert keys.deterministic.hex() not in repr(keys)
    assert tpch.load_keys(tmp_path) == keys  # cached, not regenerated
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0


def test_same_answer_and_check() -> None:
    assert baselines.same_answer([("A", Decimal("10.50"), 3)], [("A", 10.5, 3)])
    assert not baselines.same_answer([("A", 1)], [("A", 1), ("B", 2)])
    assert not baselines.same_answer([(1.0,)], [(1.001,)])
    with pytest.raises(baselines.BenchFailure, match="q6: the client_pyca answer differs"):
        baselines.check("q6", "client_pyca", [(1,)], [(2,)])


def test_the_pyca_client_agrees_with_the_native_codec() -> None:
    import engine

    keys = tpch.BenchKeys(os.urandom(32), os.urandom(32))
    client = baselines.PycaClient(keys)
    prices = pa.array([Decimal("901.00"), None, Decimal("104949.50")], pa.decimal128(15, 2))
    cells = client.encrypt(prices, "lineitem", "l_extendedprice")
    native = engine.decrypt_column(cells, keys.randomized, "DECIMAL(15,2)")
    assert native.to_pylist() == prices.to_pylist()
    flags = pa.array(["N", "R", "N", "A"])
    flag_cells = engine.encrypt_column(flags, keys.deterministic, "DETERMINISTIC", "VARCHAR(1)")
    assert client.decrypt(flag_cells, "lineitem", "l_returnflag").to_pylist() == flags.to_pylist()
    phone = client.encrypt(["27-918-335-1736"], "customer", "c_phone")
    again = engine.encrypt_column(
        ["27-918-335-1736"], keys.deterministic, "DETERMINISTIC", "VARCHAR(15)"
    )
    assert phone.to_pylist() == again.to_pylist()


def test_the_udf_floor_returns_true_for_every_row() -> None:
    import duckdb

    con = duckdb.connect()
    baselines.register_floor(con)
    con.execute("CREATE TABLE t AS SELECT 'x'::BLOB AS a FROM range(5000)")
    counted = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {baselines.UDF_FLOOR3}(a, a, a)) FROM t "
        f"WHERE {baselines.UDF_FLOOR}(a)"
    ).fetchall()
    assert counted == [(5000, 5000)]


def test_the_readme_documents_every_case_and_option() -> None:
    from pathlib import Path

    from bench.__main__ import ALL_CASES

    readme = (Path(__file__).resolve().parents[2] / "bench" / "README.md").read_text("utf-8")
    for case in ALL_CASES:
        assert f"`{case}`" in readme, f"bench/README.md does not describe the case {case}"
    options = ("--sf", "--quick", "--only", "--repeat", "--pyca-sample", "--no-growth")
    for option in (*options, "--no-enclavesql"):
        assert f"`{option}" in readme, f"bench/README.md does not describe {option}"
    for variant in report.VARIANTS:
        assert f"`{variant}`" in readme, f"bench/README.md does not describe the variant {variant}"


@pytest.mark.parametrize(
    "module", ["report", "tpch", "baselines", "__main__", "chart", "suite_rows", "enclavesql"]
)
def test_the_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    loaded = importlib.import_module(f"bench.{module}")
    outcome = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert outcome.failed == 0
    if module != "chart":  # the chart's only public function writes files
        assert outcome.attempted > 0


def test_suite_results_become_rows_of_the_one_shape() -> None:
    from bench import suite_rows

    operators = {
        "cells": 1000,
        "codec": "aesni-shani",
        "results": {
            "8_byte": {"decrypt_only": 10.0, "compare_lt": 8.0, "like": 5.0, "sum": 4.0},
            "32_byte": {"decrypt_only": 5.0, "compare_lt": 5.0, "like": 2.5, "sum": None},
        },
    }
    sql = {
        "rows": 1000,
        "bulk_insert_rows_per_s": 500,
        "plaintext_insert_rows_per_s": 1000,
        "bulk_insert_file_rows_per_s": 250,
        "plaintext_insert_file_rows_per_s": 1000,
        "point_lookup_p50_ms": 3.0,
        "plaintext_point_lookup_p50_ms": 1.0,
        "unique_lookup_p50_ms": 1.0,
        "plaintext_unique_lookup_p50_ms": 0.5,
        "small_query_p50_ms": 0.9,
        "plaintext_small_query_p50_ms": 0.3,
    }
    rotation = {
        "rows": 1000,
        "kernel_rows_per_second": {"enclave_reencrypt": 500, "client_decrypt_encrypt": 1000},
        "table_rows_per_second": {"client": 200, "enclave": 400},
    }
    rows = report.add_ratios(
        suite_rows.enclave_ops_rows(operators)
        + suite_rows.sql_layer_rows(sql)
        + suite_rows.rotation_rows(rotation)
    )
    assert all(tuple(row) == report.ROW_FIELDS for row in rows)
    by = {(row["case"], row["variant"]): row for row in rows}
    assert ("enclave_ops_32b", "enclave_sum") not in by  # SUM is measured on 8 bytes only
    assert by[("enclave_ops_8b", "enclave_lt")]["ratio_vs_floor"] == pytest.approx(10 / 8)
    assert by[("enclave_ops_32b", "enclave_like")]["ratio_vs_floor"] == pytest.approx(2.0)
    assert by[("sql_point_lookup", "enclavesql")]["ratio_vs_plaintext"] == pytest.approx(3.0)
    assert by[("sql_bulk_insert_file", "enclavesql")]["median_s"] == pytest.approx(4.0)
    assert by[("sql_small_query", "enclavesql")]["rows"] == 1000
    targets = report.evaluate_targets(rows, None, sf=0.1)
    assert _target(targets, "enclave comparison ops")["measured"] == pytest.approx(80.0)
    assert _target(targets, "enclave comparison ops")["met"] is True
    assert _target(targets, "warm small query")["measured"] == pytest.approx(0.6)
    assert _target(targets, "bulk load")["measured"] == pytest.approx(0.0005)
    assert _target(targets, "in-place re-encryption")["measured"] == pytest.approx(40.0)
    assert _target(targets, "deterministic point lookup")["met"] is False


def test_a_failed_suite_leaves_a_row_that_says_so() -> None:
    from bench import suite_rows

    row = suite_rows.failed_suite_row("rotation", RuntimeError("no\nenclave"))
    assert tuple(row) == report.ROW_FIELDS and not report.is_measured(row)
    assert row["note"] == "not measured: the rotation suite failed: RuntimeError: no enclave"
    assert "the rotation suite failed" in report.format_table(report.add_ratios([row]))


@pytest.fixture
def product(tmp_path):
    """The product variant on a tiny in-memory EnclaveSQL database without an enclave: its
    randomized column refuses comparisons, its deterministic one answers equality."""
    import engine
    from bench import enclavesql
    from engine.client.keystores import build_registry

    build_registry(key_directory=tmp_path).get("PEM_FILE").generate_key("cmk.pem", key_size=2048)
    con = engine.connect(":memory:", key_dir=str(tmp_path))
    enclavesql._key_ddl(con, tuple(enclavesql.CEKS.values()))
    con.execute(
        enclavesql.create_table_sql(
            "lineitem",
            [("l_rowid", "BIGINT"), ("l_quantity", "DECIMAL(15,2)"), ("l_returnflag", "VARCHAR")],
            {key: tpch.ENCRYPTED["lineitem"][key] for key in ("l_quantity", "l_returnflag")},
        )
    )
    con.bulk_insert(
        "lineitem",
        pa.table(
            {
                "l_rowid": [0, 1, 2],
                "l_quantity": [Decimal("1.00"), Decimal("30.00"), None],
                "l_returnflag": ["A", "N", "A"],
            }
        ),
        progress=False,
    )
    variant = object.__new__(enclavesql.EnclaveSQLVariant)
    variant.con, variant.prefixes = con, []
    yield variant
    con.close()


def _case(sql: str, name: str = "range_50pct") -> baselines.QueryCase:
    return baselines.QueryCase(name, "lineitem", sql, lambda *args: None, ())


def test_the_product_variant_records_a_refused_case(product) -> None:
    case = _case("SELECT count(*) FROM {lineitem} WHERE l_quantity <= 25")
    row = product.query_row(case, 3, 3, [(1,)], {"lineitem": "plain"}, repeat=1)
    assert not report.is_measured(row)
    assert row["note"].startswith("not supported yet: ProgrammingError: lineitem.l_quantity")
    assert (row["case"], row["variant"], row["rows"]) == ("range_50pct", "enclavesql", 3)


def test_the_product_variant_is_timed_and_checked_against_plaintext(product) -> None:
    case = _case("SELECT count(*) FROM {lineitem} WHERE l_returnflag = 'A'", "point_lookup")
    row = product.query_row(case, 3, 3, [(2,)], {"lineitem": "plain"}, repeat=2)
    assert report.is_measured(row) and row["rows"] == 3 and row["variant"] == "enclavesql"
    with pytest.raises(baselines.BenchFailure, match="point_lookup: the enclavesql answer"):
        product.query_row(case, 3, 3, [(3,)], {"lineitem": "plain"}, repeat=1)


def test_the_product_schema_and_refusal_text() -> None:
    from bench import enclavesql

    ddl = enclavesql.create_table_sql(
        "customer", [("c_name", "VARCHAR"), ("c_phone", "VARCHAR")], tpch.ENCRYPTED["customer"]
    )
    assert "c_name VARCHAR(25) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_rnd" in ddl
    assert "c_phone VARCHAR(15) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = cek_det" in ddl
    import engine

    text = enclavesql.refusal(engine.OperationalError("enclave\n  unavailable"))
    assert text == "OperationalError: enclave unavailable"


def test_the_chart_labels_a_refused_case_instead_of_leaving_a_gap(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the test and bench extras")
    from bench import chart

    rows = _rows(("q6", "plaintext", 0.01, 100), ("q6", "client_pyca", 1.0, 100))
    rows.append(report.unsupported_row("q6", "enclavesql", 100, "NotSupportedError: refused"))
    result = _result(rows)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots()
    chart._ratio_panel(axis, result["rows"], "ratio_vs_plaintext", "ratio")
    labels = [text.get_text() for text in axis.texts]
    pyplot.close(figure)
    assert "enclavesql:\nnot supported" in labels
    (latest, dated) = chart.write_chart(result, tmp_path)
    assert latest.read_bytes().startswith(b"\x89PNG") and dated.exists()

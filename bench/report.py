"""The benchmark suite's one result shape: rows, ratios, targets, the stdout table and the JSON.

Every suite reports rows of ROW_FIELDS; targets are decided here from those numbers alone, and a
figure that was not measured (or whose variant is not supported yet) is never counted as met.
It measures nothing and draws nothing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROW_FIELDS = (
    "case",
    "variant",
    "median_s",
    "min_s",
    "max_s",
    "rows",
    "ratio_vs_plaintext",
    "ratio_vs_floor",
    "note",
)
TARGET_FIELDS = ("figure", "target", "measured", "met", "reason")
# Variants, in the order the table and the chart show them.
VARIANTS = (
    "plaintext",
    "enclavesql",
    "client_path",
    "udf_floor",
    "codec_floor",
    "codec_decrypt_only",
    "enclave_lt",
    "enclave_like",
    "enclave_sum",
    "enclave_reencrypt",
    "native_codec",
    "client_pyca",
    "codec_fast",
    "codec_portable",
    "codec_pyca",
)
# The floor a row's ratio_vs_floor divides by: the measured UDF floor where the case has one,
# else the time the codec needs for the case's cells at its measured rate; the enclave
# operator suite's floor is the codec decrypting the very same cells.
FLOOR_VARIANTS = ("udf_floor", "codec_floor", "codec_decrypt_only")
NOT_YET = "not measured in this run"
NOT_SUPPORTED = "not supported yet"

Row = dict[str, Any]


def make_row(
    case: str,
    variant: str,
    times: Sequence[float],
    rows: int,
    note: str = "",
    *,
    scale: float = 1.0,
) -> Row:
    """One result row from repeated timings (seconds); `scale` extrapolates a sampled run.

    >>> row = make_row("q6", "plaintext", [0.3, 0.1, 0.2], 1000)
    >>> row["median_s"], row["min_s"], row["max_s"], row["ratio_vs_plaintext"]
    (0.2, 0.1, 0.3, None)
    >>> make_row("q6", "client_pyca", [1.0], 1000, scale=10.0)["median_s"]
    10.0
    """
    if not times:
        raise ValueError(f"{case}/{variant}: a row needs at least one timing")
    scaled = [value * scale for value in times]
    return {
        "case": case,
        "variant": variant,
        "median_s": statistics.median(scaled),
        "min_s": min(scaled),
        "max_s": max(scaled),
        "rows": int(rows),
        "ratio_vs_plaintext": None,
        "ratio_vs_floor": None,
        "note": note,
    }


def unsupported_row(case: str, variant: str, rows: int, why: str) -> Row:
    """A row for a variant that could not run: no timings, and a note that says why.

    Such a row stays in the table and the JSON, so a refused case is never silently missing.

    >>> row = unsupported_row("q6", "enclavesql", 600, "NotSupportedError: arithmetic in SUM")
    >>> row["median_s"] is None, row["note"]
    (True, 'not supported yet: NotSupportedError: arithmetic in SUM')
    """
    return {
        "case": case,
        "variant": variant,
        "median_s": None,
        "min_s": None,
        "max_s": None,
        "rows": int(rows),
        "ratio_vs_plaintext": None,
        "ratio_vs_floor": None,
        "note": f"{NOT_SUPPORTED}: {why}" if not why.startswith("not ") else why,
    }


def is_measured(row: Row | None) -> bool:
    """Whether a row carries a timing (an unsupported or failed variant's row does not)."""
    return row is not None and row["median_s"] is not None


def add_ratios(rows: Iterable[Row]) -> list[Row]:
    """Copies of `rows` with both ratios filled in against the same case at the same size.

    >>> rows = [make_row("q6", "plaintext", [0.1], 10), make_row("q6", "client_pyca", [2.0], 10)]
    >>> [row["ratio_vs_plaintext"] for row in add_ratios(rows)]
    [1.0, 20.0]
    """
    rows = [dict(row) for row in rows]
    by_key = {(row["case"], row["rows"], row["variant"]): row for row in rows}
    for row in rows:
        if not is_measured(row):
            continue
        plaintext = by_key.get((row["case"], row["rows"], "plaintext"))
        row["ratio_vs_plaintext"] = _divide(row["median_s"], plaintext)
        for floor_variant in FLOOR_VARIANTS:
            floor = by_key.get((row["case"], row["rows"], floor_variant))
            if is_measured(floor):
                row["ratio_vs_floor"] = _divide(row["median_s"], floor)
                break
    return rows


def _divide(median: float, denominator: Row | None) -> float | None:
    if not is_measured(denominator) or denominator["median_s"] <= 0:  # type: ignore[index]
        return None
    return float(median / denominator["median_s"])  # type: ignore[index]


def evaluate(
    figure: str, op: str, threshold: float, measured: float | None, reason: str = ""
) -> dict[str, Any]:
    """One target decided from a number: met is None when there is no number, never True.

    >>> evaluate("Q6 (x plaintext)", "<=", 40, 12.5)["met"]
    True
    >>> evaluate("Q6 (x plaintext)", "<=", 40, 55.0)["met"]
    False
    >>> evaluate("Q6 (x plaintext)", "<=", 40, None, NOT_YET)["met"] is None
    True
    """
    if op not in (">=", "<="):
        raise ValueError(f"a target compares with >= or <=, not {op!r}")
    if measured is None:
        met = None
        reason = reason or NOT_YET
    else:
        met = measured >= threshold if op == ">=" else measured <= threshold
        if not met:
            verdict = f"missed: measured {measured:.3g}, target {op} {threshold:g}"
            reason = f"{verdict}; {reason}" if reason else verdict
    return {
        "figure": figure,
        "target": f"{op} {threshold:g}",
        "measured": None if measured is None else round(measured, 4),
        "met": met,
        "reason": reason,
    }


def _find(rows: Sequence[Row], case: str, variant: str, size: int | None = None) -> Row | None:
    """The row of a case and variant at `size` rows, or at the case's largest size."""
    matches = [row for row in rows if row["case"] == case and row["variant"] == variant]
    if size is not None:
        matches = [row for row in matches if row["rows"] == size]
    return max(matches, key=lambda row: row["rows"]) if matches else None


Reading = tuple[float | None, str]


def _absent(case: str, variant: str, row: Row | None) -> str:
    """Why a figure has no number: the row's own note when it ran and was refused."""
    if row is None:
        return f"not measured in this run (no {case} {variant} row)"
    return f"{case}: {row['note']}"


def _ratio(rows: Sequence[Row], case: str, top: str, bottom: str) -> Reading:
    numerator = _find(rows, case, top)
    if not is_measured(numerator):
        return None, _absent(case, top, numerator)
    assert numerator is not None
    denominator = _find(rows, case, bottom, numerator["rows"])
    if not is_measured(denominator):
        return None, _absent(case, bottom, denominator)
    return _divide(numerator["median_s"], denominator), f"from {case}"


def _worst(readings: Sequence[Reading], op: str) -> Reading:
    """The worst measured reading (the highest for <=, the lowest for >=), naming what else
    could not be measured; a target is never decided from the most flattering case."""
    measured = [(value, why) for value, why in readings if value is not None]
    missing = [why for value, why in readings if value is None]
    if not measured:
        return None, "; ".join(missing)
    pick = max if op == "<=" else min
    value, why = pick(measured, key=lambda reading: reading[0])
    if missing:
        # A case that was not measured could be worse: such a figure can miss, never meet.
        return value, f"{PARTIAL}: worst measured, {why}; {'; '.join(missing)}"
    return value, f"worst case, {why}"


def _codec_rate(codec: dict[str, Any] | None, implementation: str, op: str) -> float | None:
    try:
        return float(codec["results"][implementation][op]["median"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Target:
    """A target of the issue: how to read its figure from a run, and what it must reach."""

    figure: str
    op: str
    threshold: float
    # (rows, codec result, scale factor) -> (measured or None, reason).
    read: Callable[[Sequence[Row], dict[str, Any] | None, float], Reading]


NO_CODEC = "not measured in this run (the codec suite did not run)"
SCALE_ONLY = "target is defined at SF 1"
PARTIAL = "not every case of the figure was measured"


def _codec_decrypt(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    if codec is None:
        return None, NO_CODEC
    rate = _codec_rate(codec, "fast", "decrypt")
    return rate, "" if rate is not None else "the fast path (AES-NI + SHA-NI) is not available"


def _codec_over_pyca(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    if codec is None:
        return None, NO_CODEC
    fast, pyca = _codec_rate(codec, "fast", "decrypt"), _codec_rate(codec, "pyca", "decrypt")
    if fast is None or not pyca:
        return None, "the fast path or the pyca loop was not measured"
    return fast / pyca, ""


ENCLAVE_OPS_CASES = ("enclave_ops_8b", "enclave_ops_32b")


def _enclave_compare(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    readings = []
    for case in ENCLAVE_OPS_CASES:
        # Same cells on both sides, so the rate ratio is the inverse of the time ratio.
        value, why = _ratio(rows, case, "codec_decrypt_only", "enclave_lt")
        readings.append((None if value is None else 100 * value, why))
    return _worst(readings, ">=")


def _at_sf1(reading: Reading, sf: float) -> Reading:
    """A figure whose target is set for SF 1: from another scale it is shown but decides
    nothing (the reason says so, which keeps the target undecided)."""
    value, why = reading
    if value is None or sf == 1:
        return value, why
    return value, f"{SCALE_ONLY}; this run is SF {sf:g} ({why})"


def _range_vs_floor(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _at_sf1(
        _worst([_ratio(rows, case, "enclavesql", "udf_floor") for case in RANGE_CASES], "<="), sf
    )


def _q6_vs_plaintext(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _at_sf1(_ratio(rows, "q6", "enclavesql", "plaintext"), sf)


def _q6_over_pyca(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _ratio(rows, "q6", "client_pyca", "enclavesql")


def _rate(rows: Sequence[Row], case: str, variant: str) -> Reading:
    row = _find(rows, case, variant)
    if not is_measured(row):
        return None, _absent(case, variant, row)
    assert row is not None
    return row["rows"] / row["median_s"] / 1e6, f"from {case}"


def _bulk_load(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _worst([_rate(rows, case, "enclavesql") for case in BULK_CASES], ">=")


def _point_lookup(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _worst([_ratio(rows, case, "enclavesql", "plaintext") for case in LOOKUP_CASES], "<=")


def _extra_ms(rows: Sequence[Row], case: str) -> Reading:
    ours = _find(rows, case, "enclavesql")
    if not is_measured(ours):
        return None, _absent(case, "enclavesql", ours)
    assert ours is not None
    plain = _find(rows, case, "plaintext", ours["rows"])
    if not is_measured(plain):
        return None, _absent(case, "plaintext", plain)
    assert plain is not None
    return (ours["median_s"] - plain["median_s"]) * 1e3, f"from {case}"


def _small_query(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    return _worst([_extra_ms(rows, case) for case in SMALL_QUERY_CASES], "<=")


def _reencrypt(rows: Sequence[Row], codec: Any, sf: float) -> Reading:
    # In-place re-encryption is the whole column rotated by the product (rotate_cek, enclave
    # path); the codec's rate is decrypt+encrypt of the very same cells through the client codec.
    table = _find(rows, "rotation_table", "enclavesql")
    if not is_measured(table):
        return None, _absent("rotation_table", "enclavesql", table)
    assert table is not None
    codec_row = _find(rows, "rotation_kernel", "native_codec", table["rows"])
    if not is_measured(codec_row):
        return None, _absent("rotation_kernel", "native_codec", codec_row)
    assert codec_row is not None
    percent = 100 * codec_row["median_s"] / table["median_s"]
    kernel, _ = _ratio(rows, "rotation_kernel", "native_codec", "enclave_reencrypt")
    detail = "whole table through rotate_cek"
    if kernel is not None:
        detail += f"; the enclave's re-encryption kernel alone runs at {100 * kernel:.0f}%"
    return percent, detail


RANGE_CASES = ("range_1pct", "range_50pct")
BULK_CASES = ("bulk_load", "sql_bulk_insert")
LOOKUP_CASES = ("point_lookup", "sql_point_lookup")
SMALL_QUERY_CASES = ("sql_small_query", "point_lookup")
TARGETS = (
    Target("codec decrypt+verify, 8 B fast path (M cells/s, one core)", ">=", 8, _codec_decrypt),
    Target("codec fast path over the pyca loop (x)", ">=", 50, _codec_over_pyca),
    Target("enclave comparison ops (% of codec decrypt rate)", ">=", 80, _enclave_compare),
    Target("randomized range filter, SF 1, 2 threads (x UDF floor)", "<=", 1.5, _range_vs_floor),
    Target("TPC-H Q6 (x plaintext)", "<=", 40, _q6_vs_plaintext),
    Target("TPC-H Q6 speed-up over client-side pyca (x)", ">=", 20, _q6_over_pyca),
    Target("bulk load, 4 encrypted columns (M rows/s)", ">=", 1, _bulk_load),
    Target("deterministic point lookup (x plaintext)", "<=", 1.5, _point_lookup),
    Target("warm small query (ms over plaintext)", "<=", 1, _small_query),
    Target("in-place re-encryption (% of codec decrypt+encrypt rate)", ">=", 60, _reencrypt),
)


def evaluate_targets(
    rows: Sequence[Row], codec: dict[str, Any] | None, sf: float
) -> list[dict[str, Any]]:
    """Every target of the issue, decided from this run's rows and codec result.

    A target measured at another scale than it is defined for keeps its figure but gets
    met=None, so that only a run at the right scale can meet or miss it.
    """
    decided = []
    for target in TARGETS:
        measured, reason = target.read(rows, codec, sf)
        outcome = evaluate(target.figure, target.op, target.threshold, measured, reason)
        if measured is not None and reason.startswith(SCALE_ONLY):
            outcome["met"], outcome["reason"] = None, reason
        elif outcome["met"] is True and reason.startswith(PARTIAL):
            outcome["met"] = None
        decided.append(outcome)
    return decided


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


NOTE_WIDTH = 150


def _clip(text: str, width: int = NOTE_WIDTH) -> str:
    """Text cut to `width` characters for the table; the JSON keeps it whole.

    >>> _clip("abcdef", 4)
    'abc…'
    """
    return text if len(text) <= width else text[: width - 1] + "…"


def _order(row: Row) -> tuple[int, int]:
    """Rows of a case by size, then in the order of VARIANTS."""
    variant = row["variant"]
    return (row["rows"], VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS))


def format_table(rows: Sequence[Row], targets: Sequence[dict[str, Any]] = ()) -> str:
    """The rows (grouped by case, in first-seen order) and the targets as fixed-width text;
    long notes are cut (the JSON keeps them whole).

    >>> text = format_table([make_row("q6", "plaintext", [0.002], 600)])
    >>> "q6" in text and "2.0ms" in text
    True
    """
    header = (
        f"{'case':<21}{'variant':<19}{'rows':>9}{'median':>10}{'min-max':>19}"
        f"{'vs plain':>10}{'vs floor':>10}  note"
    )
    lines = [header, "-" * len(header)]
    cases: list[str] = []
    for row in rows:
        if row["case"] not in cases:
            cases.append(row["case"])
    for case in cases:
        for row in sorted((row for row in rows if row["case"] == case), key=_order):
            spread = (
                f"{_seconds(row['min_s'])}-{_seconds(row['max_s'])}" if is_measured(row) else "-"
            )
            lines.append(
                f"{row['case']:<21}{row['variant']:<19}{row['rows']:>9}"
                f"{_seconds(row['median_s']):>10}{spread:>19}"
                f"{_times(row['ratio_vs_plaintext']):>10}{_times(row['ratio_vs_floor']):>10}"
                f"  {_clip(row['note'])}".rstrip()
            )
    if targets:
        lines += ["", f"{'target':<60}{'goal':>9}{'measured':>11}  status"]
        for target in targets:
            status = {True: "met", False: "MISSED", None: "not decided"}[target["met"]]
            measured = "-" if target["measured"] is None else f"{target['measured']:.3g}"
            detail = f" ({target['reason']})" if target["reason"] else ""
            if target["measured"] is None:
                reason = target["reason"] or NOT_YET
                status, detail = (
                    ("", reason)
                    if reason.startswith("not measured")
                    else ("not measured", f" ({reason})")
                )
            lines.append(
                f"{target['figure']:<60}{target['target']:>9}{measured:>11}  "
                + _clip(f"{status}{detail}".strip(), 2 * NOTE_WIDTH)
            )
    return "\n".join(lines)


def build_result(
    rows: Sequence[Row],
    codec: dict[str, Any] | None,
    *,
    sf: float,
    quick: bool,
    repeat: int,
    machine: dict[str, Any],
    command: str,
    partial: bool = False,
    when: datetime | None = None,
) -> dict[str, Any]:
    """The JSON document of one run: rows with ratios, decided targets, machine, codec result."""
    rows = add_ratios(rows)
    for row in rows:
        odd = set(ROW_FIELDS) ^ set(row)
        if odd:
            raise ValueError(
                f"row {row.get('case')}/{row.get('variant')}: missing or extra fields {odd}"
            )
    when = when or datetime.now(UTC)
    return {
        "suite": "enclavesql-bench",
        "when_utc": when.isoformat(timespec="seconds"),
        "sf": sf,
        "quick": quick,
        "partial": partial,
        "repeat": repeat,
        "command": command,
        "machine": machine,
        "rows": rows,
        "targets": evaluate_targets(rows, codec, sf),
        "codec": codec,
    }


def result_name(result: dict[str, Any], suffix: str) -> str:
    """`<UTC date>-sf<sf>` plus suffix, the file name of a run's outputs; a quick run or one
    limited with --only is marked, so that it never replaces the day's full run.

    >>> result_name({"when_utc": "2026-11-29T12:00:00+00:00", "sf": 0.1}, ".json")
    '2026-11-29-sf0.1.json'
    >>> result_name({"when_utc": "2026-11-29T12:00:00+00:00", "sf": 0.01, "quick": True}, ".png")
    '2026-11-29-sf0.01-quick.png'
    """
    kind = "-quick" if result.get("quick") else ""
    kind += "-partial" if result.get("partial") else ""
    return f"{result['when_utc'][:10]}-sf{result['sf']:g}{kind}{suffix}"


def write_json(result: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    """Writes bench/results/<result_name>.json (replacing a run of the same day and kind)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / result_name(result, ".json")
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    scratch.replace(path)
    return path

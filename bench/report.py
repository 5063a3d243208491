"""The benchmark suite's one result shape: rows, ratios, targets, the stdout table and the JSON.

Every suite reports rows of ROW_FIELDS; targets are decided here from those numbers alone, and a
figure that was not measured is never counted as met. It measures nothing and draws nothing.
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
    "udf_floor",
    "codec_floor",
    "native_codec",
    "client_pyca",
    "codec_fast",
    "codec_portable",
    "codec_pyca",
)
# The floor a row's ratio_vs_floor divides by: the measured UDF floor where the case has one,
# else the time the codec needs for the case's cells at its measured rate.
FLOOR_VARIANTS = ("udf_floor", "codec_floor")
NOT_YET = "not measured yet (needs the SQL layer / the enclave)"

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


def add_ratios(rows: Iterable[Row]) -> list[Row]:
    """Copies of `rows` with both ratios filled in against the same case at the same size.

    >>> rows = [make_row("q6", "plaintext", [0.1], 10), make_row("q6", "client_pyca", [2.0], 10)]
    >>> [row["ratio_vs_plaintext"] for row in add_ratios(rows)]
    [1.0, 20.0]
    """
    rows = [dict(row) for row in rows]
    by_key = {(row["case"], row["rows"], row["variant"]): row for row in rows}
    for row in rows:
        plaintext = by_key.get((row["case"], row["rows"], "plaintext"))
        row["ratio_vs_plaintext"] = _divide(row["median_s"], plaintext)
        for floor_variant in FLOOR_VARIANTS:
            floor = by_key.get((row["case"], row["rows"], floor_variant))
            if floor is not None:
                row["ratio_vs_floor"] = _divide(row["median_s"], floor)
                break
    return rows


def _divide(median: float, denominator: Row | None) -> float | None:
    if denominator is None or denominator["median_s"] <= 0:
        return None
    return float(median / denominator["median_s"])


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
        if not met and not reason:
            reason = f"missed: measured {measured:.3g}, target {op} {threshold:g}"
    return {
        "figure": figure,
        "target": f"{op} {threshold:g}",
        "measured": None if measured is None else round(measured, 4),
        "met": met,
        "reason": reason,
    }


def _median(rows: Sequence[Row], case: str, variant: str, size: int | None = None) -> Row | None:
    """The row of a case and variant at `size` rows, or at the case's largest size."""
    matches = [row for row in rows if row["case"] == case and row["variant"] == variant]
    if size is not None:
        matches = [row for row in matches if row["rows"] == size]
    return max(matches, key=lambda row: row["rows"]) if matches else None


def _ratio(rows: Sequence[Row], case: str, top: str, bottom: str) -> float | None:
    numerator = _median(rows, case, top)
    if numerator is None:
        return None
    denominator = _median(rows, case, bottom, numerator["rows"])
    return _divide(numerator["median_s"], denominator)


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
    read: Callable[[Sequence[Row], dict[str, Any] | None, float], tuple[float | None, str]]


NO_CODEC = "not measured in this run (the codec suite did not run)"


def _codec_decrypt(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    if codec is None:
        return None, NO_CODEC
    rate = _codec_rate(codec, "fast", "decrypt")
    return rate, "" if rate is not None else "the fast path (AES-NI + SHA-NI) is not available"


def _codec_over_pyca(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    if codec is None:
        return None, NO_CODEC
    fast, pyca = _codec_rate(codec, "fast", "decrypt"), _codec_rate(codec, "pyca", "decrypt")
    if fast is None or not pyca:
        return None, "the fast path or the pyca loop was not measured"
    return fast / pyca, ""


def _range_vs_floor(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    ratios = [_ratio(rows, case, "enclavesql", "udf_floor") for case in RANGE_CASES]
    known = [ratio for ratio in ratios if ratio is not None]
    if not known:
        return None, ""
    # The target is set for SF 1; a figure from another scale is shown but decides nothing.
    return max(known), "" if sf == 1 else f"target is defined at SF 1; this run is SF {sf:g}"


def _q6_vs_plaintext(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    return _ratio(rows, "q6", "enclavesql", "plaintext"), ""


def _q6_over_pyca(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    return _ratio(rows, "q6", "client_pyca", "enclavesql"), ""


def _bulk_load(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    row = _median(rows, "bulk_load", "enclavesql")
    return (None, "") if row is None else (row["rows"] / row["median_s"] / 1e6, "")


def _point_lookup(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    return _ratio(rows, "point_lookup", "enclavesql", "plaintext"), ""


def _small_query(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    ours = _median(rows, "point_lookup", "enclavesql")
    if ours is None:
        return None, ""
    plain = _median(rows, "point_lookup", "plaintext", ours["rows"])
    if plain is None:
        return None, "the plaintext point lookup was not measured"
    return (ours["median_s"] - plain["median_s"]) * 1e3, ""


def _reencrypt(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    row = _median(rows, "reencrypt", "enclavesql")
    decrypt = _codec_rate(codec, "fast", "decrypt") or _codec_rate(codec, "portable", "decrypt")
    encrypt = _codec_rate(codec, "fast", "encrypt_randomized") or _codec_rate(
        codec, "portable", "encrypt_randomized"
    )
    if row is None:
        return None, ""
    if not decrypt or not encrypt:
        return None, "the codec rates were not measured"
    # Decrypting and re-encrypting one cell takes 1/decrypt + 1/encrypt microseconds.
    codec_rate = 1 / (1 / decrypt + 1 / encrypt)
    return 100 * (row["rows"] / row["median_s"] / 1e6) / codec_rate, ""


def _needs_enclave(rows: Sequence[Row], codec: Any, sf: float) -> tuple[float | None, str]:
    return None, "not measured yet (needs the enclave comparison operators)"


RANGE_CASES = ("range_1pct", "range_50pct")
TARGETS = (
    Target("codec decrypt+verify, 8 B fast path (M cells/s, one core)", ">=", 8, _codec_decrypt),
    Target("codec fast path over the pyca loop (x)", ">=", 50, _codec_over_pyca),
    Target("enclave comparison ops (% of codec decrypt rate)", ">=", 80, _needs_enclave),
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
        if measured is not None and reason.startswith("target is defined at"):
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


def _order(row: Row) -> tuple[int, int]:
    """Rows of a case by size, then in the order of VARIANTS."""
    variant = row["variant"]
    return (row["rows"], VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS))


def format_table(rows: Sequence[Row], targets: Sequence[dict[str, Any]] = ()) -> str:
    """The rows (grouped by case, in first-seen order) and the targets as fixed-width text.

    >>> text = format_table([make_row("q6", "plaintext", [0.002], 600)])
    >>> "q6" in text and "2.0ms" in text
    True
    """
    header = (
        f"{'case':<16}{'variant':<15}{'rows':>9}{'median':>10}{'min-max':>19}"
        f"{'vs plain':>10}{'vs floor':>10}  note"
    )
    lines = [header, "-" * len(header)]
    cases: list[str] = []
    for row in rows:
        if row["case"] not in cases:
            cases.append(row["case"])
    for case in cases:
        for row in sorted((row for row in rows if row["case"] == case), key=_order):
            spread = f"{_seconds(row['min_s'])}-{_seconds(row['max_s'])}"
            lines.append(
                f"{row['case']:<16}{row['variant']:<15}{row['rows']:>9}"
                f"{_seconds(row['median_s']):>10}{spread:>19}"
                f"{_times(row['ratio_vs_plaintext']):>10}{_times(row['ratio_vs_floor']):>10}"
                f"  {row['note']}".rstrip()
            )
    if targets:
        lines += ["", f"{'target':<60}{'goal':>9}{'measured':>11}  status"]
        for target in targets:
            status = {True: "met", False: "MISSED", None: "not decided"}[target["met"]]
            measured = "-" if target["measured"] is None else f"{target['measured']:.3g}"
            detail = f" ({target['reason']})" if target["reason"] else ""
            if target["measured"] is None:
                status, detail = target["reason"] or NOT_YET, ""
            lines.append(
                f"{target['figure']:<60}{target['target']:>9}{measured:>11}  {status}{detail}"
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

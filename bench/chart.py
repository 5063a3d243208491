"""The benchmark chart: ratios against plaintext and against the floor, and the cost growth.

It draws a run's result (report.build_result) into bench/results/latest.png and a dated copy,
with matplotlib's Agg backend so that no display is needed. It measures and decides nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import RESULTS, VARIANTS, Row, result_name

COLORS = {
    "plaintext": "#4d4d4d",
    "enclavesql": "#1b9e77",
    "udf_floor": "#7570b3",
    "codec_floor": "#a6a6d9",
    "codec_decrypt_only": "#a6a6d9",
    "enclave_lt": "#1b9e77",
    "enclave_like": "#66c2a5",
    "enclave_sum": "#0b5d45",
    "enclave_reencrypt": "#1b9e77",
    "client_path": "#e7298a",
    "native_codec": "#66a61e",
    "client_pyca": "#d95f02",
    "codec_fast": "#1b9e77",
    "codec_portable": "#e6ab02",
    "codec_pyca": "#d95f02",
}
# Targets drawn on the chart: (panel, case, ratio, label), from the issue's targets table.
TARGET_MARKS = (
    ("ratio_vs_plaintext", "q6", 40.0, "<= 40x"),
    ("ratio_vs_plaintext", "point_lookup", 1.5, "<= 1.5x"),
    ("ratio_vs_plaintext", "sql_point_lookup", 1.5, "<= 1.5x"),
    ("ratio_vs_plaintext", "sql_unique_lookup", 1.5, "<= 1.5x"),
    ("ratio_vs_floor", "enclave_ops_8b", 1.25, "<= 1.25x (80%)"),
    ("ratio_vs_floor", "enclave_ops_32b", 1.25, ""),
    ("ratio_vs_floor", "range_1pct", 1.5, "<= 1.5x at SF 1"),
    ("ratio_vs_floor", "range_50pct", 1.5, ""),
)
PANELS = (
    ("ratio_vs_plaintext", "time / plaintext DuckDB (log)"),
    ("ratio_vs_floor", "time / floor (UDF floor, else codec floor) (log)"),
)


def _largest(rows: Sequence[Row]) -> list[Row]:
    """Each case at its largest size only; the growth panel shows the other sizes."""
    biggest: dict[str, int] = {}
    for row in rows:
        biggest[row["case"]] = max(biggest.get(row["case"], 0), row["rows"])
    return [row for row in rows if row["rows"] == biggest[row["case"]]]


def _ratio_panel(axis: Any, rows: Sequence[Row], field: str, label: str) -> None:
    largest = _largest(rows)
    shown = [row for row in largest if row[field] is not None]
    if field == "ratio_vs_floor":
        # Plaintext under the floor says only that DuckDB beats Python; it crowds the panel.
        shown = [row for row in shown if row["variant"] != "plaintext"]
    # The product's refused cases are drawn as a label, so that a gap never looks like a win.
    refused = {
        row["case"]
        for row in largest
        if row["variant"] == "enclavesql" and row["median_s"] is None and row["rows"] > 0
    }
    cases = list(dict.fromkeys(row["case"] for row in shown))
    variants = [v for v in VARIANTS if any(row["variant"] == v for row in shown)]
    if not cases:
        axis.text(0.5, 0.5, "nothing measured", ha="center", va="center")
        axis.set_axis_off()
        return
    width = 0.8 / max(1, len(variants))
    for index, variant in enumerate(variants):
        positions, heights = [], []
        for position, case in enumerate(cases):
            for row in shown:
                if row["case"] == case and row["variant"] == variant:
                    positions.append(position - 0.4 + width * (index + 0.5))
                    heights.append(row[field] - 1.0)
        # Bars grow up or down from a ratio of 1, so "faster than the reference" reads as such.
        axis.bar(
            positions,
            heights,
            width,
            bottom=1.0,
            label=variant,
            color=COLORS.get(variant, "#999999"),
        )
    for position, case in enumerate(cases):
        if case in refused:
            axis.annotate(
                "enclavesql:\nnot supported",
                (position, 1.0),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=6,
                color=COLORS["enclavesql"],
            )
    marked = False
    for panel, case, ratio, text in TARGET_MARKS:
        if panel == field and case in cases:
            position = cases.index(case)
            axis.hlines(
                ratio,
                position - 0.45,
                position + 0.45,
                colors="red",
                linestyles="--",
                label=None if marked else "target",
            )
            marked = True
            axis.annotate(
                text,
                (position, ratio),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=7,
                color="red",
            )
    axis.axhline(1.0, color="black", linewidth=0.6)
    axis.set_yscale("log")
    axis.set_xticks(range(len(cases)), cases, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(label, fontsize=9)
    axis.grid(axis="y", which="major", alpha=0.3)
    # At most 8 entries a line, so that the legend stays inside the figure.
    axis.legend(
        fontsize=7, ncol=min(8, len(variants) + 1), loc="lower left", bbox_to_anchor=(0, 1.0)
    )


def _growth_panel(axis: Any, rows: Sequence[Row]) -> None:
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        if row["variant"] == "codec_floor" or row["median_s"] is None:
            continue  # computed from the codec rate (linear by construction), or not measured
        series.setdefault((row["case"], row["variant"]), []).append((row["rows"], row["median_s"]))
    grown = {key: sorted(points) for key, points in series.items() if len(points) >= 3}
    if not grown:
        axis.text(0.5, 0.5, "no cost-growth runs", ha="center", va="center")
        axis.set_axis_off()
        return
    markers = dict(zip(sorted({case for case, _ in grown}), "osD^v", strict=False))
    for (case, variant), points in sorted(grown.items()):
        axis.plot(
            [size for size, _ in points],
            [seconds for _, seconds in points],
            marker=markers.get(case, "o"),
            color=COLORS.get(variant, "#999999"),
            label=f"{case} / {variant}",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("rows (first N rows of lineitem)", fontsize=9)
    axis.set_ylabel("median seconds (log)", fontsize=9)
    axis.grid(which="major", alpha=0.3)
    axis.set_title("cost growth", fontsize=9)
    axis.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def write_chart(result: dict[str, Any], results_dir: Path = RESULTS) -> list[Path]:
    """Draws the run into results_dir/<date>-sf<sf>.png and, for a full run, latest.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = result["rows"]
    figure, axes = pyplot.subplots(3, 1, figsize=(13, 14))
    for axis, (field, label) in zip(axes[:2], PANELS, strict=True):
        _ratio_panel(axis, rows, field, label)
    _growth_panel(axes[2], rows)
    figure.suptitle(
        f"EnclaveSQL bench, TPC-H SF {result['sf']:g}{' (quick)' if result.get('quick') else ''}"
        f", {result['when_utc'][:10]} "
        f"({result['machine'].get('cpu_model', '?')}, {result['machine'].get('cores', '?')} cores)",
        fontsize=11,
    )
    figure.tight_layout()
    results_dir.mkdir(parents=True, exist_ok=True)
    dated = results_dir / result_name(result, ".png")
    # Written under a temporary name first so that a reader never sees half a PNG.
    scratch = results_dir / (dated.name + ".tmp")
    figure.savefig(scratch, dpi=110, format="png")
    pyplot.close(figure)
    scratch.replace(dated)
    if result.get("quick") or result.get("partial"):
        return [dated]  # latest.png, which the README shows, is kept for full runs
    latest = results_dir / "latest.png"
    shutil.copyfile(dated, latest)
    return [latest, dated]

"""The QC report: report.json (machine-readable), report.md (a person's view), one PNG per op.

The dataset-level table follows the review's Table 3 (text readability, matching degree,
correctness, number of tasks, instruction / response / visual diversity, complexity, balance), for
the input and for what was kept, so `allava qc compare A B` can put two runs side by side.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# (key, label, better): the review's indicators first, then our extra usability numbers.
INDICATORS: list[tuple[str, str, str]] = [
    ("text_readability", "Text readability (mean token log-prob)", "higher"),
    ("image_readability", "Image readability (share decodable)", "higher"),
    ("matching_degree", "Matching degree (mean CLIP similarity, chunked)", "higher"),
    ("correctness", "Correctness (LLM judge, share correct)", "higher"),
    ("num_tasks", "Task diversity (number of tasks)", "higher"),
    ("task_entropy", "Task diversity (entropy, nats)", "higher"),
    ("instruction_diversity", "Instruction diversity (communities per task)", "higher"),
    ("response_diversity", "Response diversity (log number of clusters)", "higher"),
    ("visual_diversity", "Visual diversity (image clusters)", "higher"),
    ("instruction_complexity", "Instruction complexity (semantic elements)", "higher"),
    ("instruction_difficulty", "Instruction complexity (LLM difficulty, 1-10)", "higher"),
    ("visual_complexity", "Visual complexity (mean entropy, bits)", "higher"),
    ("edge_density", "Visual complexity (mean edge density)", "higher"),
    ("balance_variance", "Balance (variance of task counts)", "lower"),
    ("balance_cv", "Balance (coefficient of variation of task counts)", "lower"),
    ("duplicate_images", "Near-duplicate images (share)", "lower"),
    ("duplicate_texts", "Near-duplicate texts (share)", "lower"),
]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not math.isnan(v):
        return float(v)
    return None


def summarize(values: list[Any]) -> dict[str, Any]:
    nums = np.array([x for x in (_num(v) for v in values) if x is not None], dtype=float)
    if nums.size == 0:
        return {"count": 0}
    q = np.percentile(nums, [5, 50, 95])
    return {"count": int(nums.size), "mean": float(nums.mean()), "min": float(nums.min()), "p5": float(q[0]),
            "p50": float(q[1]), "p95": float(q[2]), "max": float(nums.max())}


def numeric_stats(stats: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for st in stats[:1000]:
        for k, v in (st or {}).items():
            if _num(v) is not None:
                keys[k] = None
    return list(keys)


def plot_op(path: Path, label: str, stats: list[dict[str, Any]], thresholds: list[Any], removed: int,
            primary: str = "", failing: int | None = None) -> bool:
    """Histograms of every thresholded stat and the primary one (else the first numeric one), with
    red threshold lines, four panels a row; a stat with a single value still draws its bar.

    No tight_layout / log axes: matplotlib's layout pass dominates the cost. `failing`: records
    outside this op's thresholds, whether or not an earlier op removed them first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = numeric_stats(stats)
    if not numeric:
        return False
    keys = [k for k in dict.fromkeys([t.stat for t in thresholds] + [primary]) if k in numeric] or numeric[:1]
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        vals = [x for x in (_num((s or {}).get(key)) for s in stats) if x is not None]
        if len(set(vals)) == 1:  # hist() spreads one value over 40 empty bins: draw it as one bar
            v = vals[0]
            width = max(abs(v) * 0.05, 0.05)
            ax.bar([v], [len(vals)], width=width, color="#4C72B0")
            ax.set_xlim(v - 10 * width, v + 10 * width)
        else:
            ax.hist(vals, bins=min(40, max(2, len(set(vals)))), color="#4C72B0")
        for t in thresholds:
            for v in (t.min, t.max) if t.stat == key else ():
                if v is not None:
                    ax.axvline(v, color="red", linestyle="--")
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    title = f"{label}: {removed} removed (red: thresholds)"
    if failing is not None and failing != removed:
        title = (f"{label}: {failing} outside its thresholds, {removed} removed by it "
                 f"(the rest by an earlier op)")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12 / rows, top=1 - 0.2 / rows, wspace=0.3, hspace=0.5)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def failing(stats: list[dict[str, Any]], thresholds: list[Any]) -> int:
    """Records outside any of the op's thresholds (an earlier op may have removed them first)."""
    return sum(any(t.fails((st or {}).get(t.stat)) for t in thresholds) for st in stats)


def indicators(run, mask: list[bool] | None = None) -> dict[str, Any]:
    """Every op's dataset indicators over the records in `mask` (all when None)."""
    out: dict[str, Any] = {}
    for s in run.specs:
        sts = [st.get(s.label) or {} for i, st in enumerate(run.stats) if mask is None or mask[i]]
        try:
            out.update(s.op.indicators(sts))
        except Exception as e:  # noqa: BLE001 - an indicator must never sink the run's outputs
            out[f"{s.label}_error"] = str(e)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return _g(v)
    return str(v)


def _g(v: float) -> str:
    """4 significant digits, and never "-0" (a float sum of entropies can land on -0.0 or -1e-17)."""
    text = f"{v:.4g}"
    return "0" if text in ("-0", "-0.0") or (abs(v) < 1e-12) else text


def indicator_table(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: one per indicator present in any column."""
    names = list(columns)
    lines = ["| indicator | better | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    known = {k for k, _, _ in INDICATORS}
    rows = list(INDICATORS) + [(k, k, "") for c in columns.values() for k in c if k not in known
                               and isinstance(c[k], (int, float))]
    seen: set[str] = set()
    for key, label, better in rows:
        if key in seen or not any(key in c for c in columns.values()):
            continue
        seen.add(key)
        lines.append(f"| {label} | {better} | " + " | ".join(_fmt(c.get(key)) for c in columns.values()) + " |")
    return lines


def write_report(run, plots: bool = True) -> dict[str, Any]:
    out: Path = run.out_dir
    kept_mask = [d is None for d in run.decisions]
    removed_by = Counter(d.op for d in run.decisions if d is not None)
    ops = []
    for s in run.specs:
        sts = [st.get(s.label) or {} for st in run.stats]
        png = out / f"hist_{s.label}.png"
        outside = failing(sts, s.thresholds)
        has_plot = plots and plot_op(png, s.label, sts, s.thresholds, removed_by[s.label], s.op.primary, outside)
        ops.append({"label": s.label, "name": s.op.name, "key": s.op.key(),
                    "thresholds": [{"stat": t.stat, "min": t.min, "max": t.max} for t in s.thresholds],
                    "removed": removed_by[s.label], "outside_thresholds": outside, "computed": run.computed[s.label],
                    "seconds": round(run.op_seconds[s.label], 3),
                    "stats": {k: summarize([x.get(k) for x in sts]) for k in numeric_stats(sts)},
                    "plot": png.name if has_plot else None, "examples": run.examples.get(s.label, [])})
    report = {
        "input": run.input, "seconds": round(run.seconds, 3),
        "counts": {"records": len(run.ids), "kept": run.kept, "removed": run.removed,
                   "bad_lines": len(run.problems),
                   "bad_by_kind": dict(Counter(k for p in run.problems for k in (p.kinds or ("other",))))},
        "computed": dict(run.computed),
        "ops": ops,
        "indicators": {"input": indicators(run), "kept": indicators(run, kept_mask)},
        "problems": [{"id": p.record_id, "line": p.line, "reason": p.reason} for p in run.problems[:20]],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    (out / "report.md").write_text("\n".join(markdown(report)) + "\n", encoding="utf-8")
    return report


def markdown(r: dict[str, Any]) -> list[str]:
    c = r["counts"]
    n = max(1, c["records"])
    lines = [f"# QC report: {r['input']}", "",
             (f"{c['records']} records: **{c['kept']} kept** ({100 * c['kept'] / n:.1f}%), {c['removed']} removed; "
              f"{c['bad_lines']} bad input entries; {r['seconds']:.1f}s."), ""]
    if c["bad_lines"]:
        lines += ["Bad input by kind: " + ", ".join(f"{k} {v}" for k, v in c["bad_by_kind"].items()), ""]
    lines += ["## Dataset indicators (the review's Table 3)", ""]
    lines += indicator_table({"input": r["indicators"]["input"], "kept": r["indicators"]["kept"]})
    lines += ["", "## Operators", "", "| op | thresholds | removed | computed now | seconds |", "|---|---|---|---|---|"]
    for op in r["ops"]:
        th = "; ".join(f"{t['stat']} " + " ".join(x for x in (f">= {t['min']:g}" if t["min"] is not None else "",
                                                              f"<= {t['max']:g}" if t["max"] is not None else "") if x)
                       for t in op["thresholds"]) or "(stats only)"
        lines.append(f"| {op['label']} | {th} | {op['removed']} | {op['computed']} | {op['seconds']:.1f} |")
    for op in r["ops"]:
        lines += ["", f"### {op['label']}", ""]
        if op["plot"]:
            lines += [f"![{op['label']}]({op['plot']})", ""]
        if op["stats"]:
            lines += ["| stat | count | mean | p5 | p50 | p95 |", "|---|---|---|---|---|---|"]
            for k, s in op["stats"].items():
                if s.get("count"):
                    lines.append(f"| {k} | {s['count']} | {_g(s['mean'])} | {_g(s['p5'])} | {_g(s['p50'])} | "
                                 f"{_g(s['p95'])} |")
        if not op["plot"] and not op["stats"]:
            lines.append("No numeric values of its stats on these records (nothing to plot)." if op["thresholds"]
                         else "Stats only, no per-record numbers: its dataset indicators are in the table above.")
        for ex in op["examples"]:
            text = " ".join(ex["text"].split())[:160]
            lines.append(f"- removed `{ex['id']}`: {ex['stat']} = {_fmt(ex['value'])} ({ex['threshold']}): {text}")
        if op["removed"] > len(op["examples"]):
            lines.append(f"- ... {op['removed']} removed by {op['label']} in all: every one in "
                         f"[removed.jsonl](removed.jsonl) (`qc.op` = `{op['label']}`)")
    if r["problems"]:
        lines += ["", "## Bad input entries (first 20)", ""]
        lines += [f"- `{p['id']}` (line {p['line']}): {p['reason']}" for p in r["problems"]]
    return lines


def compare(a: str | Path, b: str | Path, out: str | Path | None = None) -> str:
    """Markdown: counts, what each operator removed, and the kept-data indicators of two QC runs side
    by side; also written to `out` (a file) when given."""
    reports = []
    for x in (a, b):
        path = Path(x) / "report.json"
        if not path.exists():
            from allava.config import ConfigError

            raise ConfigError(f"{x}: no report.json (not an `allava qc` output folder)")
        reports.append(json.loads(path.read_text()))
    ra, rb = reports
    cols = {f"A: {Path(a).name}": ra["indicators"]["kept"], f"B: {Path(b).name}": rb["indicators"]["kept"]}
    lines = [f"# QC compare: A = {a}, B = {b}", ""]
    lines += ["| | A | B |", "|---|---|---|"]
    for k in ("records", "kept", "removed", "bad_lines"):
        lines.append(f"| {k} | {ra['counts'][k]} | {rb['counts'][k]} |")
    removed_a = {op["label"]: op["removed"] for op in ra["ops"]}
    removed_b = {op["label"]: op["removed"] for op in rb["ops"]}
    lines += ["", "Removed by each operator:", "", "| op | A | B |", "|---|---|---|"]
    for label in dict.fromkeys([*removed_a, *removed_b]):
        lines.append(f"| {label} | {_fmt(removed_a.get(label))} | {_fmt(removed_b.get(label))} |")
    lines += ["", "Indicators of the kept data:", ""] + indicator_table(cols)
    text = "\n".join(lines) + "\n"
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return text

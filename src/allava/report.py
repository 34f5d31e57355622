"""The quickstart's report: Markdown for people, JSON for machines, one loss-curve PNG."""
from __future__ import annotations

import json
import math
from pathlib import Path

TARGET_ACCURACY = 0.85
TARGET_CHANCE_MULTIPLE = 2.0
TARGET_WALL_S = 15 * 60
# (model A, model B, what the comparison shows): tested on the questions both answered
COMPARISONS = (
    ("full/stage2", "stage2-only/stage2", "stage 1 + 2 vs stage 2 alone (Table 6)"),
    ("full/stage2", "noisy/stage2", "clean vs noisy stage-2 data"),
    ("qc/stage2", "noisy/stage2", "QC'd vs noisy stage-2 data"),
)


def plot_losses(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = report["phases"]
    curves = []
    for name in ("stage0-lm", "stage0-clip"):
        if phases.get(name, {}).get("loss_history"):
            curves.append((name, list(enumerate(phases[name]["loss_history"], 1))))
    for key, phase in phases.items():
        for stage, info in phase.get("stages", {}).items():
            curves.append((f"{key.removeprefix('train-')}/{stage}", info["losses"]))
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
    for ax, (name, points) in zip(axes[0], curves):
        if points:
            steps, losses = zip(*points)
            ax.plot(steps, losses, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(report: dict) -> dict[str, dict]:
    final = report["evals"].get("full/stage2") or report["evals"].get("stage2-only/stage2")
    wall = report["wall_s_total"] - report.get("wall_s_noise_study", 0.0)  # the target is the default run's
    out = {"wall_time": {"value": wall, "target": f"<= {TARGET_WALL_S} s", "met": wall <= TARGET_WALL_S}}
    if final:
        out["overall_accuracy"] = {"value": final["overall"], "target": f">= {TARGET_ACCURACY}",
                                   "met": final["overall"] >= TARGET_ACCURACY}
        weakest = min(final["abilities"].items(), key=lambda kv: kv[1]["accuracy"] / kv[1]["chance"])
        ratio = weakest[1]["accuracy"] / weakest[1]["chance"]
        out["every_ability_vs_chance"] = {"value": f"{weakest[0]}: {ratio:.1f}x chance",
                                          "target": f">= {TARGET_CHANCE_MULTIPLE}x",
                                          "met": ratio >= TARGET_CHANCE_MULTIPLE}
    return out


def _ability_table(evals: dict) -> list[str]:
    cols = list(evals)
    abilities = sorted({a for e in evals.values() for a in e["abilities"]})
    lines = ["| ability | chance | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for a in abilities:
        chance = next(e["abilities"][a]["chance"] for e in evals.values() if a in e["abilities"])
        cells = [f"{evals[c]['abilities'][a]['accuracy']:.1%}" if a in evals[c]["abilities"] else "-" for c in cols]
        lines.append(f"| {a} | {chance:.1%} | " + " | ".join(cells) + " |")
    lines.append("| **overall** | | " + " | ".join(f"**{evals[c]['overall']:.1%}**" for c in cols) + " |")
    return lines


def paired_comparisons(evals: dict) -> dict[str, dict]:
    """Exact McNemar tests for the COMPARISONS whose two evaluations both kept their correct ids."""
    from allava.evaluate.paired import paired_compare

    out = {}
    for a, b, label in COMPARISONS:
        ea, eb = evals.get(a, {}), evals.get(b, {})
        if "correct_ids" in ea and "correct_ids" in eb and ea["n"] == eb["n"]:
            res = paired_compare(set(ea["correct_ids"]), set(eb["correct_ids"]), ea["n"])
            out[f"{a} vs {b}"] = {"label": label, "a": a, "b": b, **res.to_dict()}
    return out


def _comparison_lines(comparisons: dict, keys: tuple[str, ...]) -> list[str]:
    rows = [c for c in comparisons.values() if c["a"] in keys and c["b"] in keys]
    if not rows:
        return []
    lines = ["", "Paired on the same questions (exact McNemar test on the questions only one model got right):", "",
             "| comparison | only the first right | only the second right | p (two-sided) |", "|---|---|---|---|"]
    lines += [f"| {c['label']} | {c['only_a']} | {c['only_b']} | {c['p_value']:.3g} |" for c in rows]
    return lines


def _noise_section(report: dict) -> list[str]:
    """The review's Table 2 shape: clean vs noisy vs QC'd training data, and what QC caught."""
    phases, evals = report["phases"], report["evals"]
    if "noise-inject" not in phases:
        return []
    inj = phases["noise-inject"]
    lines = ["", "## Noise and quality control", "",
             f"{inj['injected']} of {inj['records']} stage-2 records ({inj['rate']:.0%}) replaced by bad ones: "
             + ", ".join(f"{k} {v}" for k, v in sorted(inj["per_kind"].items())) + "."]
    qc = phases.get("noise-qc")
    if qc:
        lines += ["", f"QC kept {qc['kept']} and removed {qc['removed']} records in {qc['qc_seconds']:.0f} s: "
                  f"**{qc['injected_removed']:.1%} of the injected** (target >= 90%) and "
                  f"**{qc['clean_removed']:.1%} of the clean** (target <= 5%) were removed.", "",
                  "| injected kind | removed |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} |" for k, v in qc["per_kind"].items()]
    cols = [c for c in ("full/stage2", "noisy/stage2", "qc/stage2") if c in evals]
    lines += ["", "Held-out accuracy after stage 2 on the clean, the noisy and the QC'd data "
              "(all from the same stage-1 model):", "",
              "| stage-2 data | overall | 95% interval (binomial) |", "|---|---|---|"]
    names = {"full/stage2": "clean", "noisy/stage2": "noisy", "qc/stage2": "noisy, then QC"}
    for c in cols:
        p, n = evals[c]["overall"], evals[c]["n"]
        half = 1.96 * math.sqrt(p * (1 - p) / max(1, n))
        lines.append(f"| {names[c]} | {p:.1%} | {max(0.0, p - half):.1%} - {min(1.0, p + half):.1%} |")
    return lines + _comparison_lines(report["comparisons"], tuple(cols))


def write_quickstart_report(out: Path, report: dict) -> None:
    report["targets"] = targets(report)
    report["comparisons"] = paired_comparisons(report["evals"])
    report["evals"] = {k: {f: v for f, v in e.items() if f != "correct_ids"} for k, e in report["evals"].items()}
    plot_losses(report, out / "loss_curves.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    phases = report["phases"]
    lines = ["# allava quickstart report", "",
             f"Total wall time {report['wall_s_total'] / 60:.1f} min on {report['threads']} CPU threads"
             + (f" ({report['wall_s_noise_study'] / 60:.1f} min of it the noise study)"
                if report.get("wall_s_noise_study") else "")
             + f"; peak RSS {report['peak_rss_mb']:.0f} MiB.", "", "## Targets", "",
             "| target | measured | wanted | met |", "|---|---|---|---|"]
    for name, t in report["targets"].items():
        value = f"{t['value']:.3f}" if isinstance(t["value"], float) else t["value"]
        lines.append(f"| {name} | {value} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", "## Held-out short-answer accuracy per ability", "",
              "Columns: `full/stage1` = after alignment only, `full/stage2` = stage 1 + stage 2, "
              "`stage2-only/stage2` = stage 2 alone (ALLaVA Table 6 ablation, `--skip-stage1`), "
              "`full/stage2, scene as text` = the same final model given the scene's description instead of the "
              "image (a text-only upper bound: what the LM can answer with perfect perception).", ""]
    lines += _ability_table(report["evals"])
    lines += _comparison_lines(report["comparisons"], ("full/stage2", "stage2-only/stage2"))
    lines += _noise_section(report)
    lines += ["", "## Phases", "", "| phase | wall (s) | peak RSS so far (MiB) | notes |", "|---|---|---|---|"]
    for name, p in phases.items():
        notes = ""
        if "stages" in p:
            notes = "; ".join(f"{s}: {i['steps']} steps, {i['tokens_per_s']:.0f} tokens/s, "
                              f"trained {sorted(i['trainable'])}"
                              for s, i in p["stages"].items())
        elif "tokens_per_s" in p:
            notes = f"{p['tokens_per_s']:.0f} tokens/s, final loss {p.get('final_loss', float('nan')):.3f}"
        elif "retrieval_acc" in p:
            notes = f"held-out image→text retrieval top-1 {p['retrieval_acc']:.1%}"
        elif "counts" in p:
            notes = ", ".join(f"{k} {v}" for k, v in p["counts"].items())
        lines.append(f"| {name} | {p['wall_s']:.1f} | {p.get('peak_rss_mb_after', float('nan')):.0f} | {notes} |")
    lines += ["", "![loss curves](loss_curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))

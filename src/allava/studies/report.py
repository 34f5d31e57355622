"""Reports of the default run and of the studies: Markdown for people, JSON for machines, PNGs.

Pieces shared by every report (the per-ability table, paired tests and their verdicts, binomial
intervals) live here; this module imports no run, so the runs can all import it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from allava.evaluate.paired import paired_compare

TARGET_ACCURACY = 0.65
TARGET_CHANCE_MULTIPLE = 2.0
TARGET_WALL_S = 15 * 60
TARGET_STUDY_WALL_S = 30 * 60
TARGET_RSS_MB = 24 * 1024  # the 2-core / 24 GiB machine the targets are set on
TARGET_TRANSCRIPT = 0.5
ALPHA = 0.05
FP32_NOTE = (" (this CPU has no native bf16, AVX512-BF16 or AMX: training runs in fp32 and takes longer than on"
             " the README's bf16 machine)")
TEXT_BOUND = "full/stage2, scene as text"  # the text-only upper bound's column
LABELS = {"full/stage1": "after stage 1", "full/stage2": "after stage 1 + 2", TEXT_BOUND: "stage 1 + 2, scene as text"}


# ---------------------------------------------------------------- shared pieces

def interval(p: float, n: int) -> tuple[float, float]:
    """95% normal-approximation binomial interval."""
    half = 1.96 * math.sqrt(p * (1 - p) / max(1, n))
    return max(0.0, p - half), min(1.0, p + half)


def ability_table(evals: dict[str, dict], labels: dict[str, str] | None = None) -> list[str]:
    """Markdown rows: one per ability with its chance level, one column per evaluation."""
    labels = labels or {}
    cols = list(evals)
    abilities = sorted({a for e in evals.values() for a in e["abilities"]})
    lines = ["| ability | chance | " + " | ".join(labels.get(c, c) for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for a in abilities:
        chance = next(e["abilities"][a]["chance"] for e in evals.values() if a in e["abilities"])
        cells = [f"{evals[c]['abilities'][a]['accuracy']:.1%}" if a in evals[c]["abilities"] else "-" for c in cols]
        lines.append(f"| {a} | {chance:.1%} | " + " | ".join(cells) + " |")
    lines.append("| **overall** | | " + " | ".join(f"**{evals[c]['overall']:.1%}**" for c in cols) + " |")
    return lines


def compare(a_key: str, a: dict, b_key: str, b: dict, label: str, expected: str) -> dict | None:
    """Exact McNemar test of A vs B on the same questions, with a verdict on the paper's direction
    (`expected`: "a" when the paper says A is better). None when either lacks its correct ids."""
    if "correct_ids" not in a or "correct_ids" not in b or a["n"] != b["n"]:
        return None
    res = paired_compare(set(a["correct_ids"]), set(b["correct_ids"]), a["n"])
    better = "a" if res.only_a > res.only_b else "b" if res.only_b > res.only_a else None
    significant = res.p_value < ALPHA and better is not None
    held = significant and better == expected
    winner, loser = (a_key, b_key) if better == "a" else (b_key, a_key)
    if held:
        verdict = f"the paper's direction held: {winner} is better than {loser} (p = {res.p_value:.3g} < {ALPHA})"
    elif significant:
        verdict = f"the opposite of the paper's direction: {winner} is better than {loser} (p = {res.p_value:.3g})"
    else:
        verdict = f"the paper's direction was not shown: no significant difference (p = {res.p_value:.3g} >= {ALPHA})"
    return {"label": label, "a": a_key, "b": b_key, **res.to_dict(), "accuracy_a": a["overall"],
            "accuracy_b": b["overall"], "expected_better": a_key if expected == "a" else b_key,
            "direction_held": held, "verdict": verdict}


def comparison_lines(comparisons: dict[str, dict]) -> list[str]:
    if not comparisons:
        return []
    lines = ["Paired on the same questions (exact McNemar test on the questions only one model got right):", "",
             "| comparison | A | B | only A right | only B right | p (two-sided) | paper's direction at p < 0.05 |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons.values():
        state = "held" if c["direction_held"] else ("reversed" if c["p_value"] < ALPHA and c["only_a"] != c["only_b"]
                                                     else "not shown")
        lines.append(f"| {c['label']} | {c['a']} ({c['accuracy_a']:.1%}) | {c['b']} ({c['accuracy_b']:.1%}) | "
                     f"{c['only_a']} | {c['only_b']} | {c['p_value']:.3g} | {state} |")
    lines += [""] + [f"- {c['label']}: {c['verdict']}." for c in comparisons.values()]
    return lines


def strip_ids(evals: dict[str, dict]) -> dict[str, dict]:
    """Evaluations without their per-question ids (they stay in phases.json for the paired tests)."""
    return {k: {f: v for f, v in e.items() if f != "correct_ids"} for k, e in evals.items()}


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def targets_lines(targets: dict[str, dict]) -> list[str]:
    lines = ["| target | measured | wanted | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(t['value'])}{' ' + t['unit'] if t.get('unit') else ''} | {t['wanted']} | "
              f"{'yes' if t['met'] else 'NO'} |"
              for name, t in targets.items()]
    return lines


def target(value, wanted: str, met: bool, unit: str = "") -> dict:
    """`unit` (e.g. "s", "MiB") is stored beside the value and printed after it."""
    return {"value": value, "wanted": wanted, "met": bool(met), **({"unit": unit} if unit else {})}


def write_json_md(folder: Path, report: dict, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- the default run

def plot_losses(phases: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for name in ("stage0-lm", "stage0-clip"):
        if phases.get(name, {}).get("loss_history"):
            curves.append((name, list(enumerate(phases[name]["loss_history"], 1))))
    for key, phase in phases.items():
        for stage, info in phase.get("stages", {}).items():
            curves.append((f"{key.removeprefix('train-')}/{stage}", info["losses"]))
    if not curves:
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
    # Panels of the same stage (e.g. stage2 of the run and of a study) share one y-scale, so they compare by eye
    shared: dict[str, list[float]] = {}
    for name, points in curves:
        if points:
            shared.setdefault(name.rsplit("/", 1)[-1], []).extend(v for _, v in points)
    for ax, (name, points) in zip(axes[0], curves):
        values = shared.get(name.rsplit("/", 1)[-1], [])
        if "/" in name and values:
            pad = 0.05 * (max(values) - min(values) or 1.0)
            ax.set_ylim(min(values) - pad, max(values) + pad)
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


def quickstart_targets(report: dict) -> dict[str, dict]:
    """The issue-11 targets of the default run, each with value, wanted and met."""
    out = {"wall_time": target(report["wall_s_total"], f"<= {TARGET_WALL_S} s (the default run's phases)",
                               report["wall_s_total"] <= TARGET_WALL_S, unit="s"),
           "peak_rss": target(report["peak_rss_mb"], f"<= {TARGET_RSS_MB} MiB (printed)",
                              report["peak_rss_mb"] <= TARGET_RSS_MB, unit="MiB")}
    final = report["evals"].get("full/stage2")
    if final:
        out["overall_accuracy"] = target(final["overall"], f">= {TARGET_ACCURACY}", final["overall"] >= TARGET_ACCURACY)
        name, ab = min(final["abilities"].items(), key=lambda kv: kv[1]["accuracy"] / kv[1]["chance"])
        ratio = ab["accuracy"] / ab["chance"]
        out["every_ability_vs_chance"] = target(f"weakest {name}: {ratio:.2f}x chance",
                                                f">= {TARGET_CHANCE_MULTIPLE}x chance",
                                                ratio >= TARGET_CHANCE_MULTIPLE)
    if report.get("transcript"):
        share = report["transcript"]["share"]
        out["chat_transcript"] = target(share, f"> {TARGET_TRANSCRIPT} of the questions right",
                                        share > TARGET_TRANSCRIPT)
    return out


def _store_note(fc: dict) -> str:
    if not fc:
        return ""
    if not fc.get("used"):
        return f", no feature store ({fc.get('reason', '')})"
    return f", feature store: {fc.get('hits', 0)} images reused, {fc.get('computed', 0)} computed"


def _phase_notes(p: dict) -> str:
    if "stages" in p:
        return "; ".join(f"{s}: {i['steps']} steps, {i['tokens_per_s']:.0f} tokens/s, trained {sorted(i['trainable'])}"
                         + _store_note(i.get("feature_cache") or {}) for s, i in p["stages"].items())
    if "tokens_per_s" in p:
        return f"{p['tokens_per_s']:.0f} tokens/s, final loss {p.get('final_loss', float('nan')):.3f}"
    if "retrieval_acc" in p:
        probes = ", ".join(f"{k} {v:.1%}" for k, v in sorted((p.get("dense_probe_acc") or {}).items()))
        return (f"held-out image→text retrieval top-1 {p['retrieval_acc']:.1%}"
                + (f"; per-patch probes (held-out): {probes}" if probes else ""))
    if "exported" in p:  # the teacher phase
        reasons = "; ".join(f"{n} × {r}" for r, n in p.get("reject_reasons", {}).items())
        return (f"`allava synth allava-laion --teacher scene`: {p['records']} records, {p['rejected']} rejected"
                + (f" ({reasons})" if reasons else "") + f", {p['items_per_s']:.0f} items/s; exported "
                + ", ".join(f"{v} {k}" for k, v in p["exported"].items() if v))
    if "counts" in p:
        return ", ".join(f"{k} {v}" for k, v in p["counts"].items())
    if "overall" in p:
        return f"{p['n']} questions, {p['overall']:.1%}"
    if "share" in p:
        return f"{p['correct']} of {p['total']} right"
    return ""


def phase_lines(phases: dict) -> list[str]:
    lines = ["| phase | wall (s) | peak RSS so far (MiB) | notes |", "|---|---|---|---|"]
    lines += [f"| {name} | {p['wall_s']:.1f} | {p.get('peak_rss_mb_after', float('nan')):.0f} | {_phase_notes(p)} |"
              for name, p in phases.items()]
    return lines


def _curve_lines(curve: dict) -> list[str]:
    if not curve.get("points"):
        return []
    abilities = sorted({a for p in curve["points"] for a in p["abilities"]})
    lines = ["", "## Learning curve", "",
             f"Held-out accuracy during stage 2 ({curve['total_steps']} steps) on a fixed subset of "
             f"{curve['questions']} benchmark questions ({curve['per_ability']} per ability); step 0 is the model "
             "after stage 1.", "",
             "| step | overall | " + " | ".join(abilities) + " |", "|---|---|" + "---|" * len(abilities)]
    for p in curve["points"]:
        lines.append(f"| {p['step']} | **{p['overall']:.1%}** | "
                     + " | ".join(f"{p['abilities'].get(a, float('nan')):.0%}" for a in abilities) + " |")
    return lines + ["", "![learning curve](learning_curve.png)"]


def _transcript_lines(t: dict) -> list[str]:
    if not t:
        return []
    how = "one conversation per scene" if t.get("multi_turn") else "a new conversation per question"
    lines = ["", "## Chat transcript", "",
             f"{len(t['scenes'])} fresh scenes (seeds no world split uses), one question per ability the scene "
             f"allows, asked through `allava chat`'s code path ({how}) with the short-answer instruction: "
             f"**{t['correct']} of {t['total']} right ({t['share']:.0%})**."]
    for s in t["scenes"]:
        lines += ["", f"**Scene {s['seed']}** (`{s['image']}`)", "", "| ability | question | model | truth | right |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['ability']} | {x['question']} | {x['answer'].replace('|', '/') or '(empty)'} | {x['truth']} | "
                  f"{'yes' if x['correct'] else 'no'} |" for x in s["turns"]]
    return lines


def _studies_lines(studies: dict) -> list[str]:
    if not studies:
        return ["", "## Studies", "", "None run yet: `allava quickstart --out DIR --study table6` (ALLaVA Table 6) or "
                "`--study noise` (the VLIT review's Table 2) reuse this run's world, stage 0 and stage 1."]
    lines = ["", "## Studies", ""]
    lines += [f"- [{name}]({s['report']}): {s['headline']}" for name, s in studies.items()]
    return lines


def write_quickstart_report(out: Path, report: dict) -> dict:
    """report.md + report.json + loss_curves.png + learning_curve.png in `out`; returns the JSON."""
    from allava.studies.curve import plot_curve

    report["targets"] = quickstart_targets(report)
    report["evals"] = strip_ids(report["evals"])
    report["phases"] = strip_ids(report["phases"])
    plot_losses(report["phases"], out / "loss_curves.png")
    curve = report.get("learning_curve", {})
    if curve.get("points"):
        plot_curve(curve["points"], curve["total_steps"], curve["questions"], out / "learning_curve.png")
    hw, r = report["hardware"], report["rendering"]
    precision = report.get("precision", "fp32")
    if report.get("precision") == "fp32" and not report.get("device"):
        precision += FP32_NOTE
    lines = ["# allava quickstart report", "",
             f"The default run took {report['wall_s_total'] / 60:.1f} min (its phases) on {report['threads']} "
             f"CPU threads{' and ' + report['device'] if report.get('device') else ''}, in {precision}; "
             f"peak RSS {report['peak_rss_mb']:.0f} MiB.", "",
             f"Preset: **{hw['preset']}**, because {hw['reason']}.", "",
             f"Rendering: {r['image_size']} px images, a {r['grid']}x{r['grid']} grid of {r['cell_px']} px cells, "
             f"vision patches of {r['patch_size']} px, {r['visual_tokens']} visual tokens per image "
             f"(vision feature layer {r['vision_feature_layer']}, select strategy `{r['select_strategy']}`).",
             "", "## Targets", ""]
    lines += targets_lines(report["targets"])
    lines += ["", "## Held-out short-answer accuracy per ability", "",
              f"{next(iter(report['evals'].values()))['n'] if report['evals'] else 0} held-out questions. "
              "`after stage 1` = alignment only, `after stage 1 + 2` = the final model, "
              "`stage 1 + 2, scene as text` = the same final model given the scene's description instead of the "
              "image: perfect perception, but the scene in words, not a learned skill (the model was trained on "
              "images, never on descriptions, so it can score below the image model on colour, object and "
              "relation: a reference, not an upper bound).", ""]
    lines += ability_table(report["evals"], LABELS)
    lines += _curve_lines(curve)
    lines += _transcript_lines(report.get("transcript", {}))
    lines += _studies_lines(report.get("studies", {}))
    lines += ["", "## Phases", ""] + phase_lines(report["phases"]) + ["", "![loss curves](loss_curves.png)"]
    write_json_md(out, report, lines)
    return report

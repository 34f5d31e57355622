"""MME: per-subtask acc and acc+ (both questions about an image right), perception and cognition
totals kept apart (ALLaVA and LLaVA-1.5 report perception; some toolkits print their sum)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import SHORT_ANSWER, Benchmark, BenchmarkError, Sample, only_answered
from allava.evaluate.metrics.choice import parse_mme

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_EXT = (".jpg", ".png", ".jpeg")


def _release_pairs(sub: Path) -> list[tuple[Path, str, str]]:
    """Release layout: ``sub/images/x.jpg`` + ``sub/questions_answers_YN/x.txt``, or both flat in
    ``sub/``; each txt holds one "question<TAB>answer" line per question."""
    qa_dir = sub / "questions_answers_YN" if (sub / "questions_answers_YN").is_dir() else sub
    img_dir = sub / "images" if (sub / "images").is_dir() else sub
    out = []
    for txt in sorted(qa_dir.glob("*.txt")):
        img = next((img_dir / (txt.stem + e) for e in IMAGE_EXT if (img_dir / (txt.stem + e)).exists()), None)
        if img is None:
            continue
        for line in txt.read_text(encoding="utf-8").splitlines():
            if line.strip():
                q, _, a = line.rpartition("\t")
                out.append((img, q.strip(), a.strip()))
    return out


def _tool_pairs(txt: Path, root: Path) -> list[tuple[Path, str, str]]:
    """eval_tool layout: ``<subtask>.txt`` of "image<TAB>question<TAB>answer" lines; images under
    ``<subtask>/images/``, ``<subtask>/`` or ``images/``."""
    sub = txt.stem
    out = []
    for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise BenchmarkError(f"mme: {txt}:{n}: expected image<TAB>question<TAB>answer")
        name, q, a = parts[0].strip(), parts[1].strip(), parts[2].strip()
        cands = [root / sub / "images" / name, root / sub / name, root / "images" / sub / name, root / "images" / name]
        img = next((c for c in cands if c.exists()), None)
        if img is None:
            raise BenchmarkError(f"mme: image {name} of {sub} not found under {root}")
        out.append((img, q, a))
    return out


@register_benchmark("mme")
class MME(Benchmark):
    convention = ("MME eval_tool: score = acc + acc+ per subtask (x100); perception = sum of the 10 perception "
                  "subtasks (max 2000, the number LLaVA-1.5/ALLaVA report as MME), cognition = sum of 4 (max 800), "
                  "reported separately; yes/no parsed from the first 4 characters")
    data_help = ("MME_Benchmark_release_version/ (one folder per subtask) or an eval_tool folder of "
                 "<subtask>.txt files (image<TAB>question<TAB>answer)")

    def load(self, path: Path) -> list[Sample]:
        if not path.is_dir():
            raise self.missing(path)
        samples = []
        for sub in PERCEPTION + COGNITION:
            if (path / f"{sub}.txt").is_file():
                pairs = _tool_pairs(path / f"{sub}.txt", path)
            elif (path / sub).is_dir():
                pairs = _release_pairs(path / sub)
            else:
                continue
            seen: dict[str, int] = defaultdict(int)
            for img, q, a in pairs:
                k = seen[img.name]
                seen[img.name] += 1
                samples.append(Sample(f"{sub}/{img.name}/{k}", f"{q}\n{SHORT_ANSWER}", img, a.lower(),
                                      {"subtask": sub, "image_name": img.name}))
        if not samples:
            raise self.missing(f"no MME subtask in {path}")
        return samples

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        by_sub: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        other = 0
        for s in samples:
            pred = parse_mme(answers[s.question_id])
            other += pred == "other"
            by_sub[s.meta["subtask"]][s.meta["image_name"]].append(pred == s.target)
        subtasks = {}
        for sub, images in by_sub.items():
            flat = [ok for v in images.values() for ok in v]
            acc = 100 * sum(flat) / len(flat)
            acc_plus = 100 * sum(all(v) for v in images.values()) / len(images)
            subtasks[sub] = {"acc": round(acc, 2), "acc_plus": round(acc_plus, 2), "score": round(acc + acc_plus, 2),
                             "n_images": len(images)}
        perception = round(sum(v["score"] for k, v in subtasks.items() if k in PERCEPTION), 2)
        cognition = round(sum(v["score"] for k, v in subtasks.items() if k in COGNITION), 2)
        return {"headline": {"MME-P": perception, "MME-C": cognition}, "perception": perception,
                "cognition": cognition, "perception_plus_cognition": round(perception + cognition, 2),
                "subtasks": dict(sorted(subtasks.items())), "n": len(samples), "n_missing": n_missing,
                "unparsed_answers": other,
                "missing_subtasks": [s for s in PERCEPTION + COGNITION if s not in subtasks],
                "convention": self.convention}

"""MME: per-subtask acc and acc+ (both questions about an image right), perception and cognition
totals kept apart (ALLaVA and LLaVA-1.5 report perception; some toolkits print their sum)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Sample,
    only_answered,
    question_key,
)
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.metrics.choice import parse_mme, parse_yorn_vlmevalkit

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
    data_help = ("MME_Benchmark_release_version/ (one folder per subtask), an eval_tool folder of "
                 "<subtask>.txt files (image<TAB>question<TAB>answer), or LLaVA's llava_mme.jsonl with "
                 "MME_Benchmark_release_version/ beside it")

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        if questions is not None:  # LLaVA's llava_mme.jsonl beside MME_Benchmark_release_version/
            rel = path.parent / "MME_Benchmark_release_version"
            root = next((r for r in (rel / "MME_Benchmark", rel, path.parent)
                         if any((r / sub).is_dir() or (r / f"{sub}.txt").is_file() for sub in PERCEPTION + COGNITION)),
                        rel)
            return overlay(self, self._load(root), questions, path,
                           lambda s: (s.meta["subtask"], s.meta["image_name"], question_key(s.meta["question"])),
                           lambda q: (q.qid.split("/")[0], q.qid.split("/")[-1], question_key(q.text)),
                           image=lambda q, s: root / q.image if q.image else s.image)
        return self._load(path)

    def _load(self, path: Path) -> list[Sample]:
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
                                      {"subtask": sub, "image_name": img.name, "question": q}))
        if not samples:
            raise self.missing(f"no MME subtask in {path}")
        return samples

    def match(self, samples, answers):
        """LLaVA (``llava_mme.jsonl``) and lmms-eval id a question by ``<subtask>/<image>``, shared by the
        image's two questions; VLMEvalKit by ``category`` + ``image_path``. The question text then
        tells the two apart (order of appearance when a tool kept no text)."""
        out = super().match(samples, answers)
        by_image: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for s in samples:
            by_image[(s.meta["subtask"], s.meta["image_name"])].append(s)
        used: set[str] = set(out)
        for a in answers:
            if a.qid in out:
                continue
            ref = a.qid if a.qid and "/" in a.qid else a.fields.get("image_path")
            if not ref:
                continue
            parts = str(ref).replace("\\", "/").split("/")
            sub = str(a.fields.get("category") or parts[0])
            cands = [s for s in by_image.get((sub, parts[-1]), []) if s.question_id not in used]
            q = question_key(next((a.fields[k] for k in ("prompt", "question", "text") if a.fields.get(k)), ""))
            pick = next((s for s in cands if q and question_key(s.meta.get("question")) == q), None)
            if pick is None and cands and not any(question_key(s.meta.get("question")) == q for s in cands):
                pick = cands[0]
            if pick is not None:
                out[pick.question_id] = a.text
                used.add(pick.question_id)
        return out

    @staticmethod
    def _totals(samples: list[Sample], preds: dict[str, str]) -> dict:
        """eval_tool ``calculation.py``: per subtask acc + acc+ (x100); the totals are sums of the
        unrounded subtask scores, rounded once for display."""
        by_sub: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for s in samples:
            by_sub[s.meta["subtask"]][s.meta["image_name"]].append(preds[s.question_id] == s.target)
        raw = {}
        for sub, images in by_sub.items():
            flat = [ok for v in images.values() for ok in v]
            acc = 100 * sum(flat) / len(flat)
            acc_plus = 100 * sum(all(v) for v in images.values()) / len(images)
            raw[sub] = (acc, acc_plus, len(images))
        perception = sum(a + p for k, (a, p, _) in raw.items() if k in PERCEPTION)
        cognition = sum(a + p for k, (a, p, _) in raw.items() if k in COGNITION)
        subtasks = {k: {"acc": round(a, 2), "acc_plus": round(p, 2), "score": round(a + p, 2), "n_images": n}
                    for k, (a, p, n) in sorted(raw.items())}
        return {"perception": round(perception, 2), "cognition": round(cognition, 2),
                "perception_plus_cognition": round(perception + cognition, 2), "subtasks": subtasks}

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        preds = {s.question_id: parse_mme(answers[s.question_id]) for s in samples}
        t = self._totals(samples, preds)
        vk = self._totals(samples, {s.question_id: parse_yorn_vlmevalkit(answers[s.question_id]) for s in samples})
        return {"headline": {"MME-P": t["perception"], "MME-C": t["cognition"]}, **t,
                "n": len(samples), "n_missing": n_missing,
                "unparsed_answers": sum(p == "other" for p in preds.values()),
                "missing_subtasks": [s for s in PERCEPTION + COGNITION if s not in t["subtasks"]],
                "conventions": {"vlmevalkit": {"MME-P": vk["perception"], "MME-C": vk["cognition"]},
                                "P+C": {"MME": t["perception_plus_cognition"]}},
                "convention": self.convention}

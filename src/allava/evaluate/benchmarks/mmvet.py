"""MM-Vet: the official few-shot grader prompt; a score in [0, 1] per answer, averaged x 100 overall
and per capability (a question counts for each capability it needs)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.config import ConfigError
from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import Benchmark, Sample, first_existing, only_answered, read_json
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.judge import parse_unit_score

GRADER = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""


RETRIES = 5


def grader_prompt(question: str, gold: str, prediction: str) -> list[dict]:
    gold = gold.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return [{"role": "user", "content": GRADER + "\n" + f"{question} | {gold} | {prediction} | "}]


@register_benchmark("mm-vet")
class MMVet(Benchmark):
    needs_judge = True
    max_new_tokens = 1024
    convention = ("MM-Vet official grader prompt, score = mean correctness x 100 overall and per capability; a "
                  "grade that is not a number in [0, 1] is asked again at temperature 0.5, 1.0, 1.5, 2.0 (5 tries, "
                  "as the official script) and then scores 0, counted in judge_failures")
    data_help = "the mm-vet folder (mm-vet.json and images/), or LLaVA's llava-mm-vet.jsonl in it"

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        root = path.parent if questions is not None else path
        raw = read_json(root / "mm-vet.json", self.name)
        images = first_existing(root / "images") or root
        samples = [Sample(qid, q["question"], images / q["imagename"], q["answer"],
                          {"capability": list(q["capability"])}) for qid, q in raw.items()]
        if questions is None:
            return samples
        # mmvet.sh: --data llava-mm-vet.jsonl, integer ids that convert_mmvet_for_eval.py names v1_<id>
        return overlay(self, samples, questions, path, lambda s: s.question_id, lambda q: f"v1_{q.qid}",
                       image=lambda q, s: images / q.image if q.image else s.image)

    def match(self, samples, answers):
        """LLaVA's answers carry llava-mm-vet.jsonl's integer ids; convert_mmvet_for_eval.py keys the
        official grader's input by ``v1_<id>``, as mm-vet.json does."""
        out = super().match(samples, answers)
        ids = {s.question_id for s in samples}
        for a in answers:
            if a.qid is not None and a.qid not in out and f"v1_{a.qid}" in ids and f"v1_{a.qid}" not in out:
                out[f"v1_{a.qid}"] = a.text
        return out

    def score(self, samples, answers, judge=None):
        if judge is None:
            raise ConfigError(f"{self.name} needs a judge: pass --judge-model (and --judge-base-url)")
        samples, n_missing = only_answered(samples, answers)
        prompts = [grader_prompt(s.prompt, s.target, answers[s.question_id]) for s in samples]
        scores: list[float | None] = [parse_unit_score(g) for g in judge.ask(prompts, max_tokens=3)]
        for attempt in range(1, RETRIES):  # the official grader retries unparsable grades, hotter each time
            todo = [i for i, sc in enumerate(scores) if sc is None]
            if not todo:
                break
            regraded = judge.ask([prompts[i] for i in todo], max_tokens=3, temperature=0.5 * attempt)
            for i, g in zip(todo, regraded):
                scores[i] = parse_unit_score(g)
        per_cap: dict[str, list[float]] = defaultdict(list)
        failures, total = 0, []
        for s, score in zip(samples, scores):
            if score is None:
                failures += 1
                score = 0.0
            total.append(score)
            for cap in s.meta["capability"]:
                per_cap[cap].append(score)
        overall = round(100 * sum(total) / max(1, len(total)), 1)
        return {"headline": {"MM-Vet": overall}, "total": overall,
                "per_capability": {k: round(100 * sum(v) / len(v), 1) for k, v in sorted(per_cap.items())},
                "judge_failures": failures, "judge": judge.model, "n": len(total), "n_missing": n_missing,
                "convention": self.convention}

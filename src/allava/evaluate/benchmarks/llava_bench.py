"""LLaVA-Bench (In-the-Wild): a judge scores the GPT-4 reference (assistant 1) and the model
(assistant 2) from 1 to 10 given the image's caption; relative score = mean(model) / mean(ref)
x 100 per category (conv / detail / complex) and overall, as LLaVA's summarize_gpt_review.py."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.config import ConfigError
from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import Benchmark, Sample, first_existing, only_answered, read_jsonl
from allava.evaluate.benchmarks.llava_questions import read_llava_questions
from allava.evaluate.judge import parse_pair_score

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
RULE = ("We would like to request your feedback on the performance of two AI assistants in response to the user "
        "question displayed above. The user asks the question on observing an image. For your reference, the visual "
        "content in the image is represented with a few sentences describing the image. \nPlease rate the "
        "helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall "
        "score on a scale of 1 to 10, where a higher score indicates better overall performance.\nPlease first output "
        "a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two "
        "scores are separated by a space.\nIn the subsequent line, please provide a comprehensive explanation of your "
        "evaluation, avoiding any potential bias and ensuring that the responses were presented in the order in "
        "which they were presented.")


def review_prompt(caption: str, question: str, reference: str, answer: str) -> list[dict]:
    role = "Assistant"
    content = (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
               f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n[System]\n{RULE}\n\n")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


@register_benchmark("llava-bench")
class LlavaBench(Benchmark):
    needs_judge = True
    max_new_tokens = 1024
    convention = ("LLaVA-Bench in-the-wild: judge scores reference (GPT-4 answer) and model 1-10; relative score = "
                  "mean(model)/mean(reference) x 100 per category; unparsable reviews are counted as judge_failures "
                  "and left out (LLaVA averaged them in as -1)")
    data_help = ("the llava-bench-in-the-wild folder (questions.jsonl, context.jsonl, answers_gpt4.jsonl, images/) "
                 "or its questions.jsonl")

    def load(self, path: Path) -> list[Sample]:
        qfile = path if read_llava_questions(path) is not None else path / "questions.jsonl"  # llavabench.sh's
        path = qfile.parent
        questions = read_jsonl(qfile, self.name)
        contexts = {c["image"]: c.get("caption", "") for c in read_jsonl(path / "context.jsonl", self.name)}
        refs = {str(a["question_id"]): a["text"] for a in read_jsonl(path / "answers_gpt4.jsonl", self.name)}
        images = first_existing(path / "images") or path
        return [Sample(str(q["question_id"]), q["text"], images / q["image"], refs.get(str(q["question_id"]), ""),
                       {"category": q.get("category", "all"), "caption": contexts.get(q["image"], "")})
                for q in questions]

    def score(self, samples, answers, judge=None):
        if judge is None:
            raise ConfigError(f"{self.name} needs a judge: pass --judge-model (and --judge-base-url)")
        samples, n_missing = only_answered(samples, answers)
        prompts = [review_prompt(s.meta["caption"], s.prompt, s.target, answers[s.question_id]) for s in samples]
        reviews = judge.ask(prompts, max_tokens=1024)
        per_cat: dict[str, list[tuple[float, float]]] = defaultdict(list)
        failures = 0
        for s, review in zip(samples, reviews):
            pair = parse_pair_score(review)
            if pair is None:
                failures += 1
                continue
            per_cat[s.meta["category"]].append(pair)
            per_cat["all"].append(pair)

        def rel(pairs: list[tuple[float, float]]) -> dict[str, float]:
            ref = sum(p[0] for p in pairs) / len(pairs)
            mod = sum(p[1] for p in pairs) / len(pairs)
            return {"relative": round(100 * mod / ref, 1) if ref else 0.0, "reference": round(10 * ref, 1),
                    "model": round(10 * mod, 1), "n": len(pairs)}

        cats = {k: rel(v) for k, v in sorted(per_cat.items())}
        overall = cats.get("all", {"relative": 0.0})["relative"]
        return {"headline": {"LLaVA-W": overall}, "relative_score": overall, "per_category": cats,
                "judge_failures": failures, "judge": judge.model, "n_missing": n_missing,
                "convention": self.convention}

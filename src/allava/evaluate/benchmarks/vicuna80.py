"""Vicuna-80 (text only): ALLaVA's pairwise judge (appendix D.1) against an anchor's answers
(LLaMA2-7B-Chat in the paper), asked in both orders so position bias cancels; win rate over votes."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from allava.config import ConfigError
from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import Benchmark, Sample, only_answered, pct, read_jsonl
from allava.evaluate.judge import parse_verdict

# Appendix D.1, with the PDF's line wrapping undone ("two\nanswers" is a wrapped line, and the
# "Here is Answer2:" line fell outside the paper's code box but belongs to the prompt).
PROMPT = ("You are a fair judge. You will be provided with a question and two answers. Your task is to judge which "
          "answer is of better quality.\nHere is the question:\n{question}\nHere is Answer1:\n{answer1}\n"
          "Here is Answer2:\n{answer2}\nYour output should be either \"Answer1\" or \"Answer2\".")


def judge_prompt(question: str, answer1: str, answer2: str) -> list[dict]:
    return [{"role": "user", "content": PROMPT.format(question=question, answer1=answer1, answer2=answer2)}]


@register_benchmark("vicuna-80")
class Vicuna80(Benchmark):
    needs_judge = True
    max_new_tokens = 1024
    convention = ("Vicuna-80, ALLaVA appendix D.1 judge prompt; each question judged twice (model as Answer1, then "
                  "as Answer2); win rate = model wins / valid votes; unparsable verdicts counted as judge_failures "
                  "and left out; consistent_win_rate = questions won in both orders")
    data_help = "a folder with question.jsonl (question_id, text, category) and anchor.jsonl (question_id, text)"

    def load(self, path: Path) -> list[Sample]:
        anchor = {str(a["question_id"]): a["text"] for a in read_jsonl(path / "anchor.jsonl", self.name)}
        out = []
        for q in read_jsonl(path / "question.jsonl", self.name):
            qid = str(q["question_id"])
            if qid not in anchor:
                raise self.missing(f"an anchor answer for question {qid} in anchor.jsonl")
            out.append(Sample(qid, q["text"], None, anchor[qid], {"category": q.get("category", "")}))
        return out

    def score(self, samples, answers, judge=None):
        if judge is None:
            raise ConfigError(f"{self.name} needs a judge: pass --judge-model (and --judge-base-url)")
        samples, n_missing = only_answered(samples, answers)
        prompts = []
        for s in samples:
            prompts.append(judge_prompt(s.prompt, answers[s.question_id], s.target))  # model first
            prompts.append(judge_prompt(s.prompt, s.target, answers[s.question_id]))  # anchor first
        verdicts = [parse_verdict(v) for v in judge.ask(prompts, max_tokens=16)]
        votes = Counter()
        consistent = 0
        for i, s in enumerate(samples):
            first, second = verdicts[2 * i], verdicts[2 * i + 1]
            won = [first == 1 if first else None, second == 2 if second else None]
            for w in won:
                votes["failure" if w is None else "win" if w else "loss"] += 1
            consistent += won == [True, True]
        valid = votes["win"] + votes["loss"]
        rate = votes["win"] / valid if valid else 0.0
        return {"headline": {"Vicuna-80": pct(rate)}, "win_rate": pct(rate),
                "consistent_win_rate": pct(consistent / max(1, len(samples))), "wins": votes["win"],
                "losses": votes["loss"], "judge_failures": votes["failure"], "judge": judge.model,
                "n": len(samples), "n_missing": n_missing, "convention": self.convention}

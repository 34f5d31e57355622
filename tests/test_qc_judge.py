"""The LLM judge: guiding examples in the prompt, k samples, majority verdict, via the real teacher."""
from __future__ import annotations

import json

from allava.quality.base import QCRecord
from allava.quality.ops.llm_judge import LLMJudge, majority, parse_verdict
from allava.synth.fake_server import serve


def rec(rid: str, answer: str) -> QCRecord:
    return QCRecord(rid, [{"from": "human", "value": "What colour is the circle?"}, {"from": "gpt", "value": answer}])


def test_majority_and_parsing():
    assert parse_verdict("Incorrect.") == 0 and parse_verdict("correct") == 1 and parse_verdict("hmm") is None
    assert majority([1, 0, 1]) == {"correct": 1, "agreement": 2 / 3, "votes": 3, "valid": 2 + 1}
    assert majority([None, None])["valid"] == 0 and "correct" not in majority([None])


def test_judge_through_the_openai_teacher(monkeypatch):
    seen = []

    def responder(req: dict) -> str:
        user = req["messages"][-1]["content"]
        text = user[-1]["text"] if isinstance(user, list) else user
        seen.append(req)
        judged = text.rsplit("Now judge:", 1)[1]
        if "blue" in judged:  # the "image" is red: a blue answer is wrong, except one dissenting sample
            return "correct" if req.get("seed") == 0 else "incorrect"
        return "Correct."

    with serve(responder=responder) as server:
        op = LLMJudge(LLMJudge.Settings(base_url=server.url, model="judge", k=3, with_image=False))
        good, bad = op.compute([rec("g", "It is red."), rec("b", "It is blue.")])
    assert good == {"correct": 1, "agreement": 1.0, "votes": 3, "valid": 3}
    assert bad["correct"] == 0 and abs(bad["agreement"] - 2 / 3) < 1e-9
    assert len(seen) == 6 and "Verdict: incorrect" in json.dumps(seen[0]["messages"])  # guiding examples sent
    assert op.indicators([good, bad]) == {"correctness": 0.5}

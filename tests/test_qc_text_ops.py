"""Text operators: MinHash dedup, LM readability (tiny LM on disk), tasks, balance, diversity, complexity."""
from __future__ import annotations

import math

import pytest

from allava.quality.base import QCRecord
from allava.quality.ops.balance import quotas
from allava.quality.ops.instruction_complexity import InstructionComplexity
from allava.quality.ops.instruction_diversity import InstructionDiversity
from allava.quality.ops.response_diversity import ResponseDiversity
from allava.quality.ops.task_diversity import TaskDiversity
from allava.quality.ops.text_dedup import TextDedup
from allava.quality.ops.text_readability import TextReadability


def rec(rid: str, q: str, a: str, image: str | None = None, **meta) -> QCRecord:
    return QCRecord(id=rid, conversations=[{"from": "human", "value": q}, {"from": "gpt", "value": a}],
                    image=image, meta=meta)


LONG = ("The image shows a red circle in the top left corner and a blue square below it. The background is a "
        "light grey colour with a faint texture. There are no other objects in the picture.")


def test_minhash_dedup_keeps_first_copy_and_respects_images():
    recs = [rec("a", "Describe.", LONG), rec("b", "Describe.", LONG.replace("faint", "soft")),
            rec("c", "Describe.", "A completely different answer about a green triangle on a beach."),
            rec("d", "Describe.", LONG, image="other.png"), rec("e", "Describe.", LONG)]
    op = TextDedup()
    s = op.finalize(op.features(recs))
    assert s[0]["similarity"] == 0.0  # the first copy survives
    assert s[1]["similarity"] > 0.6 and s[4]["similarity"] == 1.0
    assert s[2]["similarity"] < 0.3
    assert s[3]["similarity"] == 0.0  # same text, different image: not a duplicate sample
    assert TextDedup(TextDedup.Settings(per_image=False)).key() != op.key()


def test_text_readability_with_a_causal_lm_from_disk(backbones):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    op = TextReadability(TextReadability.Settings(model=backbones["lm"]))
    texts = ["a red circle at the top left", "what colour is the shape", ""]
    stats = op.compute([rec(str(i), "q", t) for i, t in enumerate(texts)])
    assert stats[2] == {}
    tok = AutoTokenizer.from_pretrained(backbones["lm"])
    model = AutoModelForCausalLM.from_pretrained(backbones["lm"]).eval()
    ids = torch.tensor([[tok.bos_token_id] + tok(texts[1], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).mean()
    assert stats[1]["logprob"] == pytest.approx(float(lp), abs=1e-4)  # padding in the batch changes nothing
    assert stats[1]["tokens"] == ids.shape[1] - 1  # every text token, the first one too (BOS conditions it)
    assert op.indicators(stats)["text_readability"] < 0
    # multi-turn: turns are scored separately and pooled by tokens; min_turn is the worst turn
    two = QCRecord("m", [{"from": "gpt", "value": texts[0]}, {"from": "gpt", "value": texts[1]}])
    (m,) = op.compute([two])
    assert m["tokens"] == stats[0]["tokens"] + stats[1]["tokens"]
    assert m["min_turn"] == pytest.approx(min(stats[0]["logprob"], stats[1]["logprob"]), abs=1e-4)
    one_word, short, garbled = op.compute([rec("w", "q", "red"), rec("s", "q", "yellow circle"),
                                           rec("g", "q", "lwoley ecrcil")])
    assert one_word == {}  # too short to judge at all
    assert "logprob" not in short and short["chars_per_token"] > 2 * garbled["chars_per_token"]


def test_small_models_score_on_one_thread_and_the_same_numbers(backbones):
    """`threads: 0` (auto) runs a tiny model on one torch thread, restored afterwards; any thread
    count gives the same log-probs (threads is not in the cache key, so it must not change them)."""
    import torch

    from allava.quality.models import thread_count, torch_threads

    before = torch.get_num_threads()
    texts = ["a red circle at the top left of the picture", "what colour is the shape in the middle"]
    auto = TextReadability(TextReadability.Settings(model=backbones["lm"]))
    two = TextReadability(TextReadability.Settings(model=backbones["lm"], threads=2))
    a = auto.compute([rec(str(i), "q", t) for i, t in enumerate(texts)])
    b = two.compute([rec(str(i), "q", t) for i, t in enumerate(texts)])
    assert auto._threads == 1 and two._threads == 2 and torch.get_num_threads() == before
    assert [x["logprob"] for x in a] == pytest.approx([x["logprob"] for x in b], abs=1e-5)
    assert auto.key() == two.key()
    big = torch.nn.Linear(5000, 5000)  # 25M parameters: torch's own default
    assert thread_count(big, 0) is None and thread_count(big, 3) == 3
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_text_readability_ranks_garbled_text_lower_with_a_trained_model(backbones, tmp_path):
    """A few steps on the domain are enough for the LM to prefer real sentences over shuffled tokens."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbones["lm"])
    model = AutoModelForCausalLM.from_pretrained(backbones["lm"])
    good = "a red circle at the top left and a blue square below it"
    batch = tok([good] * 4, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(12):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    words = good.split()
    random.Random(0).shuffle(words)
    op = TextReadability(TextReadability.Settings(model=str(tmp_path / "lm")))
    g, b = op.compute([rec("g", "q", good), rec("b", "q", " ".join(words))])
    assert g["logprob"] > b["logprob"] + 1.0


def test_tasks_from_meta_or_rules_and_entropy():
    recs = [rec("1", "How many circles are there?", "2", image="x.png"),
            rec("2", "Describe the image in detail.", "...", image="x.png"),
            rec("3", "Write a poem.", "...", task="text_only"),
            rec("4", "q", "a", image="x.png", task="allava_instruct", ability="counting"),
            rec("5", "q", "a", image="x.png", task="short_vqa", ability="mixed")]
    stats = TaskDiversity().compute(recs)
    assert [s["task"] for s in stats] == ["counting", "description", "text_only", "allava_instruct/counting",
                                          "short_vqa"]
    rules = TaskDiversity(TaskDiversity.Settings(source="rules")).compute(recs[2:3])
    assert rules[0]["task"] == "text:other"
    ind = TaskDiversity().indicators(stats)
    assert ind["num_tasks"] == 5 and ind["task_entropy"] == pytest.approx(math.log(5))


def test_balance_quotas_water_fill():
    assert quotas({"a": 100, "b": 100, "c": 5}, 65) == {"c": 5, "a": 30, "b": 30}
    assert sum(quotas({"a": 7, "b": 3, "c": 50}, 31).values()) == 31


def test_instruction_diversity_counts_communities_per_task():
    colour = [rec(f"c{i}", f"What colour is the {s}?", "red", task="vqa") for i, s in enumerate(["circle", "square"] * 3)]
    count = [rec(f"n{i}", f"How many {s} stars appear in the sky tonight?", "2", task="vqa") for i, s in
             enumerate(["bright", "small"] * 3)]
    op = InstructionDiversity()
    stats = op.finalize(op.features(colour + count))
    assert stats[0]["community"].startswith("vqa:")
    assert stats[0]["community"] != stats[6]["community"]
    assert op.indicators(stats)["instruction_diversity"] >= 2
    assert op.indicators(stats[:6])["instruction_diversity"] == 1


def test_response_diversity_clusters_and_flags_near_duplicates():
    templ = [rec(f"t{i}", "q", f"The answer is {w}.") for i, w in enumerate(["red", "blue", "green", "red", "blue"])]
    varied = [rec("v1", "q", "Photosynthesis converts light into chemical energy in plants."),
              rec("v2", "q", "The stock market closed higher on Friday after strong earnings."),
              rec("v3", "q", "Basketball teams have five players on the court at a time.")]
    op = ResponseDiversity(ResponseDiversity.Settings(min_samples=2, eps=0.3))
    stats = op.finalize(op.features(templ + varied))
    assert stats[0]["nn_sim"] > 0.99 and stats[3]["nn_sim"] > 0.99  # "red" twice
    assert max(s["nn_sim"] for s in stats[5:]) < 0.9
    assert {s["cluster"] for s in stats[5:]} == {-1}
    assert op.indicators(stats)["response_diversity"] > 0


def test_instruction_complexity_orders_simple_below_compound():
    simple, compound = InstructionComplexity().compute([
        rec("s", "<image>\nWhat colour is the circle?", "red"),
        rec("c", "<image>\nWhich shape left of the red circle is larger than the blue square, and why?", "...")])
    assert simple["elements"] < compound["elements"] and simple["clauses"] < compound["clauses"]

"""Does the stage-0 LM (the Phi-2 stand-in) answer from a scene given in words? The held-out
benchmark questions, each after the scene's description (the report's "scene as text" form), asked
of the language model alone, greedy, scored by the benchmark's own scorer per ability.

Phi-2 brings in-context retrieval ("what colour is the cross?" answered from a description) from
its pretraining; LLaVA's stage 2 only has to connect image tokens to it. The quickstart's tiny LM
is pretrained on the text form of the world for that reason; this says whether it worked.

    python benchmarks/lm_text_readout.py --run runs/quickstart            # the run's stage-0 LM
    python benchmarks/lm_text_readout.py --run runs/quickstart --lm DIR   # any causal LM folder
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a quickstart run folder (its world and stage-0 LM)")
    ap.add_argument("--lm", default=None, help="causal LM folder (default: RUN/lm)")
    ap.add_argument("--per-ability", type=int, default=60, help="questions per ability")
    ap.add_argument("--template", default="human_assistant")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from allava.data.tokenize import ConversationEncoder
    from allava.evaluate.benchmarks import get_benchmark
    from allava.evaluate.synthetic import balanced_subset, text_question

    run = Path(args.run)
    lm_dir = Path(args.lm) if args.lm else run / "lm"
    for path in (lm_dir, run / "world" / "bench.jsonl"):
        if not path.exists():
            print(f"error: {path} is missing (run `allava quickstart --out {run}` first)", file=sys.stderr)
            return 2
    tok = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    enc = ConversationEncoder(tok, args.template)
    size = json.loads((run / "world" / "world.json").read_text())["config"]["image_size"]
    bench = get_benchmark("synthetic")
    keep = balanced_subset(run / "world", args.per_ability * 10)
    samples = [x for x in bench.load(run / "world") if x.question_id in keep]
    answers = {}
    for sample in samples:  # the report's "scene as text" question (evaluate/synthetic.py), to the LM alone
        text = enc.render(text_question(sample, size).conversations, add_generation_prompt=True)[0]
        ids = tok(text, return_tensors="pt", add_special_tokens=not text.startswith(tok.bos_token or "\0")).input_ids
        with torch.no_grad():
            out = lm.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        answers[sample.question_id] = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip().split("\n")[0]
    scores = bench.score(samples, answers)  # the benchmark's own normalized exact match
    for a, r in sorted(scores["abilities"].items()):
        print(f"{a:12s} {r['accuracy'] * 100:5.1f}%  (chance {r['chance'] * 100:.0f}%, n={r['n']})")
    print(f"{'overall':12s} {scores['overall'] * 100:5.1f}%")
    print(json.dumps({"lm": str(lm_dir), "overall": scores["overall"], "per_ability": scores["abilities"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Principle 1 (readability), text: mean token log-probability under a causal LM (review eq. 2).

Garbled or truncated text is improbable under a language model of the domain. The real backend is
any causal LM by hub id or local path (`model:`, required; offline, the quickstart's tiny LM
`OUT/lm`, which its noise study fills in). The model is loaded on the first record that is not cached, so a rerun
with only thresholds changed never loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, no_cache, register_op


@dataclass
class TextReadabilitySettings(OpSettings):
    model: str | None = None  # hub id or local path of a causal LM (required)
    field: str = "responses"  # responses | all
    max_length: int = 256
    min_tokens: int = 4  # shorter turns ("red", "2") are not judged: a lone word is improbable anywhere
    min_chars: int = 8  # turns this long count towards chars_per_token
    prefix: str = "bos"  # token that starts each text: bos | eos (LMs pretrained on eos-joined text) | none
    device: str = no_cache("cpu")
    batch_size: int = no_cache(16)
    threads: int = no_cache(0)  # torch intra-op threads; 0 = auto (1 for a model under 20M parameters)


@register_op("text_readability")
class TextReadability(Op):
    Settings = TextReadabilitySettings
    primary = "logprob"
    required = {"model": "a causal LM by hub id or path, e.g. the quickstart's OUT/lm"}
    VERSION = "3"

    def __init__(self, settings: TextReadabilitySettings | None = None):
        super().__init__(settings)
        self._model = None
        self._tok = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from allava.quality.models import check_model, thread_count

        s = self.settings
        path = check_model(s.model, self.name)
        self._tok = AutoTokenizer.from_pretrained(path)
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token
        self._tok.padding_side = "right"
        self._model = AutoModelForCausalLM.from_pretrained(path).to(s.device).eval()
        self._threads = thread_count(self._model, s.threads)

    def _texts(self, r: QCRecord) -> list[str]:
        texts = r.responses if self.settings.field == "responses" else r.instructions + r.responses
        return [t for t in texts if t.strip()]

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        """Each turn is scored on its own (turns are separate documents to the LM; joining them with
        newlines the LM never saw would be scored as noise), then pooled per record: `logprob` over all
        tokens, `min_turn` the worst turn (one garbled turn among good ones). Short turns skip the LM
        but still count in `chars_per_token`: garbled text breaks into many short BPE pieces."""
        if self._model is None:
            self._load()
        s = self.settings
        texts = [(i, t) for i, r in enumerate(batch) for t in self._texts(r)]
        # one batched call (the Rust tokenizer's), each text tokenized once: score gets the same ids
        ids = self._tok([t for _, t in texts], add_special_tokens=False)["input_ids"] if texts else []
        flat, chars, pieces = [], [0] * len(batch), [0] * len(batch)
        for (i, t), row in zip(texts, ids):
            n = len(row)
            if len(t) >= s.min_chars:
                chars[i] += len(t)
                pieces[i] += n
            if n >= s.min_tokens:
                flat.append((i, t, row))
        order = sorted(range(len(flat)), key=lambda k: len(flat[k][1]))  # similar lengths: less padding
        scores: dict[int, tuple[float, int]] = {}
        bs = max(1, s.batch_size)
        for b in range(0, len(order), bs):
            part = order[b:b + bs]
            for k, sc in zip(part, self._score_ids([flat[k][2] for k in part])):
                scores[k] = sc
        per: list[list[tuple[float, int]]] = [[] for _ in batch]
        for k, (i, _, _) in enumerate(flat):
            if scores[k][1] > 0:
                per[i].append(scores[k])
        out: list[Stats] = []
        for i, turns in enumerate(per):
            st: Stats = {"chars_per_token": chars[i] / pieces[i]} if pieces[i] else {}
            n = sum(c for _, c in turns)
            if n:
                st.update({"logprob": sum(m * c for m, c in turns) / n, "min_turn": min(m for m, _ in turns),
                           "tokens": n})
            out.append(st)
        return out

    def score(self, texts: list[str]) -> list[tuple[float, int]]:
        """(mean log-prob of the text's tokens, number of tokens) per text; the `prefix` token conditions
        the first one, so a one-word answer is scored too. The quickstart LM is pretrained on lines joined
        by eos (it never saw bos), so its config uses `prefix: eos`."""
        if self._model is None:
            self._load()
        return self._score_ids([self._tok(t, add_special_tokens=False)["input_ids"] for t in texts])

    def _score_ids(self, token_ids: list[list[int]]) -> list[tuple[float, int]]:
        import torch

        from allava.quality.models import torch_threads

        tok, s = self._tok, self.settings
        start = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "none": None}[s.prefix]
        bos = [start] if start is not None else []
        rows = [(bos + list(x))[: s.max_length] for x in token_ids]
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        with torch.no_grad(), torch_threads(self._threads):
            logits = self._model(input_ids=ids.to(s.device), attention_mask=mask.to(s.device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, 1:].float()
        cnt = m.sum(dim=1)
        mean = (tok_lp * m).sum(dim=1) / cnt.clamp(min=1)
        return [(float(a) if c > 0 else float("nan"), int(c)) for a, c in zip(mean.tolist(), cnt.tolist())]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["logprob"] for s in stats if isinstance(s.get("logprob"), float) and not np.isnan(s["logprob"])]
        return {"text_readability": float(np.mean(v))} if v else {}

    def close(self) -> None:
        self._model = self._tok = None

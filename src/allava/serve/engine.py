"""The model side of `allava serve`: prompts as in training, and a running batch that requests join
and leave at every decode step (iteration-level, or continuous, batching: vLLM's and TGI's scheduling).

The running batch is one Hugging Face `DynamicCache` whose rows are left-padded to a common length,
with a 2-D attention mask saying which cached positions are real and each row's own position ids (as
`generate` derives them from the mask), so a row computes what it would alone. Newly arrived requests
are prefilled together (left-padded, images in prompt order), then their cache rows are padded on the
left to the running batch's length and concatenated; finished rows are dropped by index and leading
columns no row uses any more are cut. A decode step is one forward of every row's last token.

Every prompt of a checkpoint starts with the same tokens: the template's system prompt and the first
role prefix (136 of the quickstart's ~170 prompt tokens). Their keys and values are computed once
(`Prefix`, vLLM's automatic prefix caching reduced to the one prefix every request shares), and a
prompt that starts with them is prefilled from its first own token: rows are laid out as
[shared prefix | left padding | own tokens], the padding masked, positions counted past the prefix.
A prompt that does not start with it (a system message of its own) is prefilled whole.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from allava.data.templates import Template
from allava.evaluate.generate import Answerer
from allava.serve.errors import bad
from allava.serve.protocol import ChatRequest

if TYPE_CHECKING:
    from allava.serve.batching import Job


class SlabLayer(DynamicLayer):
    """A `DynamicLayer` that writes each step into spare room instead of concatenating: transformers'
    layer copies the whole cache every token (`torch.cat`), which was over half of a 32-row decode step.
    `keys`/`values` stay what transformers expects, [rows, heads, length, dim] views of the slab."""

    SPARE = 64  # positions reserved past the current length each time the slab is (re)made

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, k = self.get_seq_length(), key_states.shape[-2]
        slab = getattr(self, "_slab", None)
        fits = (slab is not None and n > 0 and self.keys.data_ptr() == slab[0].data_ptr()
                and self.keys.shape[0] == slab[0].shape[0] and n + k <= slab[0].shape[-2])
        if not fits:
            b, h, _, d = key_states.shape
            slab = tuple(key_states.new_empty(b, h, n + k + self.SPARE, d) for _ in range(2))
            if n:
                slab[0][:, :, :n] = self.keys
                slab[1][:, :, :n] = self.values
            self._slab = slab
        slab[0][:, :, n:n + k] = key_states
        slab[1][:, :, n:n + k] = value_states
        self.keys, self.values = slab[0][:, :, :n + k], slab[1][:, :, :n + k]
        return self.keys, self.values


def new_cache() -> DynamicCache:
    cache = DynamicCache()
    cache.layer_class_to_replicate = SlabLayer
    return cache


@dataclass
class Rows:
    """The running batch: `jobs[i]` owns row i of the cache, the mask, the positions and `last`."""

    jobs: list["Job"]
    cache: DynamicCache
    mask: torch.Tensor  # [rows, cached length]: 1 where the cache holds a real token
    positions: torch.Tensor  # [rows]: the position id of the token each row feeds next
    last: torch.Tensor  # [rows]: that token

    def __len__(self) -> int:
        return len(self.jobs)

    def _layers(self):
        return [layer for layer in self.cache.layers if getattr(layer, "keys", None) is not None]

    def extend(self, other: "Rows") -> None:
        """Join `other`'s rows: the shorter side is padded on the left (masked), then rows concatenate."""
        a, b = self.mask.shape[1], other.mask.shape[1]
        n = max(a, b)
        self.mask = torch.cat([F.pad(self.mask, (n - a, 0)), F.pad(other.mask, (n - b, 0))])
        for mine, theirs in zip(self._layers(), other._layers()):
            mine.keys = torch.cat([F.pad(mine.keys, (0, 0, n - a, 0)), F.pad(theirs.keys, (0, 0, n - b, 0))])
            mine.values = torch.cat([F.pad(mine.values, (0, 0, n - a, 0)), F.pad(theirs.values, (0, 0, n - b, 0))])
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.jobs = self.jobs + other.jobs

    def retire(self) -> list["Job"]:
        """Drop the rows whose job is done (answered or cancelled); returns those jobs."""
        gone = [j for j in self.jobs if j.done]
        if not gone:
            return []
        keep = torch.tensor([i for i, j in enumerate(self.jobs) if not j.done], dtype=torch.long)
        self.jobs = [j for j in self.jobs if not j.done]
        if not self.jobs:
            return gone
        self.mask, self.positions, self.last = self.mask[keep], self.positions[keep], self.last[keep]
        start = int(self.mask.any(0).to(torch.int8).argmax())  # columns before it are padding in every row
        self.mask = self.mask[:, start:]
        for layer in self._layers():
            layer.keys = layer.keys[keep, :, start:]
            layer.values = layer.values[keep, :, start:]
        return gone


@dataclass
class Prefix:
    """The tokens every prompt starts with and their keys/values per layer ([1, heads, len, dim])."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    def matches(self, prompt: list[int]) -> bool:
        return len(prompt) > len(self.ids) and prompt[:len(self.ids)] == self.ids


class Engine:
    """Prompts as in training; `prefill` starts rows, `decode` advances every row one token."""

    def __init__(self, answerer: Answerer, prefix_cache: bool = True):
        self.answerer = answerer
        self.model = answerer.model
        self.tokenizer = answerer.tokenizer
        text_config = getattr(answerer.model.config, "text_config", answerer.model.config)
        self.context = int(getattr(text_config, "max_position_embeddings", 4096))
        eos = answerer.tokenizer.eos_token_id
        self.eos = {eos} if eos is not None else set()
        self.prefix = self._shared_prefix() if prefix_cache else None

    @torch.inference_mode()
    def _shared_prefix(self) -> Prefix | None:
        """The template's head: the tokens that prompts of different questions (text, image) share."""
        probes = [self.answerer.encoder.prompt_ids([{"from": "human", "value": v}])
                  for v in ("q", "x y", "<image>\nz")]
        n = 0
        while all(n < len(p) for p in probes) and len({p[n] for p in probes}) == 1:
            n += 1
        image = getattr(self.model.config, "image_token_id", None)
        ids = probes[0][:max(0, n - 1)]  # the last shared token may still merge with what follows
        if image in ids:
            ids = ids[:ids.index(image)]
        if len(ids) < 2:
            return None
        cache = new_cache()
        self.model(input_ids=torch.tensor([ids], device=self.model.device), cache=cache, use_cache=True,
                   logits_to_keep=1)
        return Prefix(ids, [(layer.keys, layer.values) for layer in cache.layers])

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        encoder = self.answerer.encoder
        if request.system is not None:
            if not isinstance(encoder.template, Template):
                raise bad("messages[0]", f"this checkpoint's template ({self.answerer.template}) takes its system "
                                         "prompt from the tokenizer; a system message cannot replace it")
            encoder = copy.copy(encoder)
            encoder.template = dataclasses.replace(encoder.template, system=request.system.rstrip() + "\n")
        return encoder.prompt_ids(request.conversations)

    def budget(self, request: ChatRequest, prompt: list[int], explicit: bool) -> int:
        """max_tokens within the context: an explicit value that cannot fit is a 400, the default shrinks."""
        room = self.context - len(prompt)
        if room < 1:
            raise bad("messages", f"the prompt is {len(prompt)} tokens (images included); this model's context "
                                  f"is {self.context}")
        if request.max_tokens > room:
            if explicit:
                raise bad("max_tokens", f"{request.max_tokens} + the prompt's {len(prompt)} tokens exceed this "
                                        f"model's context of {self.context}")
            return room
        return request.max_tokens

    def prefill(self, jobs: list["Job"]) -> Rows:
        """Start rows for `jobs`: those that share the cached prefix in one forward, the others in another."""
        shared = [j for j in jobs if self.prefix is not None and self.prefix.matches(j.prompt)]
        whole = [j for j in jobs if j not in shared]
        rows = self._prefill(shared, self.prefix) if shared else None
        if whole:
            new = self._prefill(whole, None)
            if rows is None:
                return new
            rows.extend(new)
        return rows

    @torch.inference_mode()
    def _prefill(self, jobs: list["Job"], prefix: Prefix | None) -> Rows:
        """One forward over the new prompts (left-padded, position ids from the mask as `generate`
        makes them, after the prefix if one is given); each row's first token is chosen and stepped."""
        skip = len(prefix.ids) if prefix else 0
        inputs = self.answerer.batch_inputs([j.prompt[skip:] for j in jobs],
                                            [im for j in jobs for im in j.request.images])
        mask = inputs["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0) + skip
        cache = new_cache()
        if prefix:
            for layer, (k, v) in enumerate(prefix.kv):
                cache.update(k.expand(len(jobs), -1, -1, -1), v.expand(len(jobs), -1, -1, -1), layer)
            mask = torch.cat([mask.new_ones(len(jobs), skip), mask], 1)
            inputs["attention_mask"] = mask
        out = self.model(**inputs, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        tokens = self.choose(out.logits[:, -1], jobs)
        rows = Rows(jobs, cache, mask, mask.sum(-1), tokens)
        for job, token in zip(jobs, tokens.tolist()):
            self.step(job, token)
        return rows

    @torch.inference_mode()
    def decode(self, rows: Rows) -> None:
        """Every row feeds its last token at its own position; the next token is chosen per row."""
        mask = torch.cat([rows.mask, rows.mask.new_ones(len(rows), 1)], 1)
        out = self.model(input_ids=rows.last[:, None].to(self.model.device), attention_mask=mask,
                         position_ids=rows.positions[:, None], cache=rows.cache, use_cache=True, logits_to_keep=1)
        rows.mask, rows.positions = mask, rows.positions + 1
        rows.last = self.choose(out.logits[:, -1], rows.jobs)
        for job, token in zip(rows.jobs, rows.last.tolist()):
            if not job.done:
                self.step(job, token)

    def choose(self, logits: torch.Tensor, jobs: list["Job"]) -> torch.Tensor:
        """Greedy rows take the argmax (what `generate(do_sample=False)` does); sampled rows draw with
        their own temperature, top_p and generator, so a seed reproduces whatever the batch-mates."""
        tokens = logits.argmax(-1)
        for i, job in enumerate(jobs):
            if job.request.sampling and not job.done:
                tokens[i] = sample(logits[i], job.request.temperature, job.request.top_p, job.generator)
        return tokens

    def step(self, job: "Job", token: int) -> None:
        if token in self.eos:
            self.finish(job, "stop")
            return
        job.tokens.append(token)
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        for s in job.request.stop:
            at = text.find(s)
            if at >= 0:
                self.finish(job, "stop", text[:at])
                return
        if len(job.tokens) >= job.max_tokens:
            self.finish(job, "length", text)
            return
        job.emit(_visible(text, job.request.stop))

    def finish(self, job: "Job", reason: str, text: str | None = None) -> None:
        if text is None:
            text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        job.emit(text.strip())
        job.finish_reason = reason
        job.send("done", reason)


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One draw as `generate(do_sample=True)` makes it: logits / temperature
    (transformers' `TemperatureLogitsWarper`), then the nucleus (`TopPLogitsWarper`: drop the
    lowest-probability tokens whose cumulative probability is at most 1 - top_p, keep at least one)."""
    scores = logits.float().cpu() / temperature  # the generator lives on the CPU
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - top_p
        drop[-1] = False
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def _visible(text: str, stops: list[str]) -> str:
    """What can be sent now: no leading or trailing whitespace (the final answer is stripped), no
    half-decoded character, and no tail that may still become a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[:len(text) - hold] if hold else text
    return text.rstrip("\ufffd").strip()

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
    """A `DynamicLayer` whose keys and values live in a slab with spare rows and columns, so that the
    running batch changes in place: a decode step writes its token into spare room (transformers'
    layer re-concatenates the whole cache every token, `torch.cat`), a leaving row is overwritten by
    the last live row, leading columns no row uses are dropped by moving the view, and joining rows
    are written into spare rows. Before, every row that left or joined copied the whole cache twice
    (indexing, then a new slab), ~20 ms a step at 32 rows: more than the step itself.
    `keys`/`values` stay what transformers expects, [rows, heads, length, dim] views of the slab;
    a layer whose tensors were replaced from outside starts a new slab from them."""

    SPARE = 64  # positions reserved past the current length each time the slab is (re)made
    SPARE_ROWS = 8  # rows reserved past the rows in use when joining rows need a bigger slab

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        k = key_states.shape[-2]
        if self.keys is not getattr(self, "_view", None) or self._hi + k > self._slab[0].shape[-2]:
            self._remake(key_states.shape[0] if self.keys.numel() == 0 else self.keys.shape[0], k)
        self._slab[0][:self._rows, :, self._hi:self._hi + k] = key_states
        self._slab[1][:self._rows, :, self._hi:self._hi + k] = value_states
        self._hi += k
        return self._show()

    def _show(self) -> tuple[torch.Tensor, torch.Tensor]:
        b, lo, hi = self._rows, self._lo, self._hi
        self.keys, self.values = self._slab[0][:b, :, lo:hi], self._slab[1][:b, :, lo:hi]
        self._view = self.keys
        return self.keys, self.values

    def _remake(self, rows: int, extra: int, capacity_rows: int = 0, pad_left: int = 0) -> None:
        """A new slab holding the current tensors (`pad_left` zero columns before them) with room
        for `extra` more positions and at least `capacity_rows` rows."""
        old_k, old_v = self.keys, self.values
        n = old_k.shape[-2] if old_k.numel() else 0
        like = old_k if old_k.numel() else self._like
        _, h, _, d = like.shape
        shape = (max(rows, capacity_rows), h, pad_left + n + extra + self.SPARE, d)
        self._slab = (like.new_empty(shape), like.new_empty(shape))
        for new, old in zip(self._slab, (old_k, old_v)):
            if pad_left:
                new[:rows, :, :pad_left] = 0
            if n:
                new[:rows, :, pad_left:pad_left + n] = old
        self._rows, self._lo, self._hi = rows, 0, pad_left + n

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._like = key_states

    def owned(self) -> bool:
        """Whether `keys`/`values` are still this layer's views of its slab."""
        return self.keys is getattr(self, "_view", None)

    def drop_rows(self, holes: list[int], movers: list[int], rows: int) -> None:
        """Keep `rows` rows: row `movers[i]` is copied into row `holes[i]` (a row that left)."""
        if holes:
            lo, hi = self._lo, self._hi
            to, src = torch.tensor(holes, device=self.keys.device), torch.tensor(movers, device=self.keys.device)
            for s in self._slab:
                s[to, :, lo:hi] = s[src, :, lo:hi]
        self._rows = rows
        self._show()

    def cut(self, start: int) -> None:
        """Drop the first `start` columns (padding in every row)."""
        self._lo += start
        self._show()

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rows joining: both sides are padded on the left (zeros, masked) to the longer length."""
        m, length = keys.shape[0], keys.shape[-2]
        n = self._hi - self._lo
        pad = max(0, length - n)  # columns the running rows gain on the left
        rows = self._rows
        if rows + m > self._slab[0].shape[0] or pad > self._lo:
            self._remake(rows, 0, rows + m + self.SPARE_ROWS, pad)
        elif pad:
            self._lo -= pad
            for s in self._slab:
                s[:rows, :, self._lo:self._lo + pad] = 0
        lo, hi = self._lo, self._hi
        for s, new in zip(self._slab, (keys, values)):
            s[rows:rows + m, :, lo:hi - length] = 0
            s[rows:rows + m, :, hi - length:hi] = new
        self._rows = rows + m
        self._show()


def new_cache() -> DynamicCache:
    cache = DynamicCache()
    cache.layer_class_to_replicate = SlabLayer
    return cache


@dataclass
class Rows:
    """The running batch: `jobs[i]` owns row i of the cache, the mask, the positions and `last`.
    Rows are not kept in arrival order: a row that leaves takes the last row in its place."""

    jobs: list["Job"]
    cache: DynamicCache
    mask: torch.Tensor  # [rows, cached length]: 1 where the cache holds a real token
    positions: torch.Tensor  # [rows]: the position id of the token each row feeds next
    last: torch.Tensor  # [rows]: that token

    def __len__(self) -> int:
        return len(self.jobs)

    def _layers(self) -> list[SlabLayer]:
        layers = [layer for layer in self.cache.layers if getattr(layer, "keys", None) is not None]
        for layer in layers:
            if not isinstance(layer, SlabLayer):
                raise TypeError("the running batch's cache must be made by new_cache()")
            if not layer.owned():  # its tensors were replaced from outside: a slab of them
                layer._remake(layer.keys.shape[0], 0)
                layer._show()
        return layers

    @torch.inference_mode()
    def extend(self, other: "Rows") -> None:
        """Join `other`'s rows: the shorter side is padded on the left (masked), then rows concatenate."""
        a, b = self.mask.shape[1], other.mask.shape[1]
        n = max(a, b)
        self.mask = torch.cat([F.pad(self.mask, (n - a, 0)), F.pad(other.mask, (n - b, 0))])
        for mine, theirs in zip(self._layers(), other._layers()):
            mine.append(theirs.keys, theirs.values)
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.jobs = self.jobs + other.jobs

    @torch.inference_mode()
    def retire(self) -> list["Job"]:
        """Drop the rows whose job is done (answered or cancelled); returns those jobs. The last
        live rows move into the rows that left (a copy of those rows only)."""
        done = [i for i, j in enumerate(self.jobs) if j.done]
        if not done:
            return []
        gone = [self.jobs[i] for i in done]
        n, keep = len(self.jobs), len(self.jobs) - len(done)
        if not keep:
            self.jobs = []
            return gone
        left = set(done)
        holes = [i for i in done if i < keep]
        movers = [i for i in range(keep, n) if i not in left]
        order = list(range(keep))
        for hole, mover in zip(holes, movers):
            order[hole] = mover
        self.jobs = [self.jobs[i] for i in order]
        index = torch.tensor(order, dtype=torch.long)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        start = int(self.mask.any(0).to(torch.int8).argmax())  # columns before it are padding in every row
        self.mask = self.mask[:, start:]
        for layer in self._layers():
            layer.drop_rows(holes, movers, keep)
            if start:
                layer.cut(start)
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
        self.vision_layers_dropped = trim_vision_tower(self.model)

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

    def pixels(self, images: list) -> torch.Tensor:
        """The images' pixel values as the checkpoint's image processor makes them (each image on its
        own, as a batched call does); the server calls this on the request's side, not in prefill."""
        return self.answerer.processor.image_processor(images, return_tensors="pt")["pixel_values"]

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
        inputs = self.answerer.batch_inputs([j.prompt[skip:] for j in jobs], [])
        pixels = [j.pixels if j.pixels is not None else self.pixels(j.request.images)
                  for j in jobs if j.request.images]
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels).to(self.model.dtype).to(self.model.device)
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
        if not (job.request.stream or job.request.stop):  # nothing to send or check before the end
            if len(job.tokens) >= job.max_tokens:
                self.finish(job, "length")
            return
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


@torch.inference_mode()
def trim_vision_tower(model) -> int:
    """Drop the vision encoder's layers after the last one whose output the projector reads (LLaVA
    reads the penultimate, `vision_feature_layer` -2: the last layer ran for nothing), as vLLM loads
    LLaVA's tower; the feature layers become positive indices into the shorter list of hidden states.
    Checked on one image: the image features must stay the same, else the tower is put back.
    Returns the number of layers dropped (0 where the tower is not a CLIP/SigLIP-style encoder)."""
    config = model.config
    tower = getattr(getattr(model, "model", None), "vision_tower", None)
    encoder = getattr(getattr(tower, "vision_model", tower), "encoder", None)  # CLIPVisionModel or its transformer
    layers = getattr(encoder, "layers", None)
    vision = getattr(tower, "config", None)
    wanted = getattr(config, "vision_feature_layer", None)
    if (not isinstance(layers, torch.nn.ModuleList) or getattr(vision, "num_hidden_layers", None) != len(layers)
            or not hasattr(model.model, "get_image_features")):
        return 0
    single = isinstance(wanted, int)
    wanted = [wanted] if single else list(wanted or [])
    states = len(layers) + 1  # the embeddings' output, then each layer's
    if not wanted or not all(isinstance(i, int) and -states <= i < states for i in wanted):
        return 0
    at = [i % states for i in wanted]
    keep = max(at)
    if keep >= len(layers):
        return 0
    size = getattr(vision, "image_size", 224)
    probe = torch.linspace(-1, 1, 3 * size * size).reshape(1, 3, size, size).to(model.dtype).to(model.device)

    def features() -> torch.Tensor:
        out = model.model.get_image_features(pixel_values=probe)
        out = getattr(out, "pooler_output", out)
        return torch.cat(list(out)) if isinstance(out, (list, tuple)) else out

    full = layers
    try:
        before = features()
        encoder.layers, vision.num_hidden_layers = torch.nn.ModuleList(list(layers)[:keep]), keep
        config.vision_feature_layer = at[0] if single else at
        after = features()
        if after.shape == before.shape and torch.equal(after, before):
            return len(full) - keep
    except Exception:  # an encoder that does not take this: leave it whole
        pass
    encoder.layers, vision.num_hidden_layers = full, len(full)
    config.vision_feature_layer = wanted[0] if single else wanted
    return 0


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

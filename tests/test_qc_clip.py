"""CLIP matching of long answers: sentence chunks within 77 tokens, aggregated by mean and min.

The tiny untrained CLIP cannot tell colours apart, so the chunking/aggregation logic is tested with
a stub encoder that can, and the real loading path separately with the tiny CLIP from disk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import test_qc_helpers as h

from allava.quality.base import QCRecord
from allava.quality.ops.clip_match import ClipMatch, HFClip, chunk_text

COLOURS = list(h.COLOURS)


class StubClip:
    """Images embed as their dominant colour, texts as the colours they name; words are tokens."""

    max_tokens = 77

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.inv: dict[int, str] = {}

    def token_ids(self, text: str) -> list[int]:
        out = []
        for w in text.lower().replace(".", " ").replace(",", " ").split():
            if w not in self.vocab:
                self.vocab[w] = len(self.vocab)
                self.inv[self.vocab[w]] = w
            out.append(self.vocab[w])
        return out

    def _unit(self, v: np.ndarray) -> np.ndarray:
        v = v + 1e-3
        return v / np.linalg.norm(v)

    def encode_texts(self, ids: list[list[int]]) -> np.ndarray:
        assert all(len(x) <= self.max_tokens - 2 for x in ids)  # the op must never exceed CLIP's window
        return np.stack([self._unit(np.array([sum(self.inv[i] == c for i in x) for c in COLOURS], float))
                         for x in ids])

    def encode_images(self, paths: list[Path]) -> np.ndarray:
        from PIL import Image

        out = []
        for p in paths:
            px = np.asarray(Image.open(p).convert("RGB"), dtype=float).reshape(-1, 3)
            d = [np.mean(np.abs(px - np.array(rgb)).sum(1) < 60) for rgb in h.COLOURS.values()]
            out.append(self._unit(np.array(d)))
        return np.stack(out)


def _red_image(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), h.COLOURS["red"]).save(path)
    return path


def test_mismatch_after_the_first_sentence_is_caught_by_min(tmp_path):
    img = _red_image(tmp_path / "red.png")
    filler = " ".join(["the shape has smooth edges and sits near the middle of the frame"] * 6)  # ~80 words
    right = f"The picture shows a red square. {filler}. Its colour is red throughout."
    wrong = f"The picture shows a red square. {filler}. Its colour is blue and green throughout."
    op = ClipMatch(encoder=StubClip())
    good, bad = op.compute([QCRecord("g", [{"from": "gpt", "value": right}], "red.png", img),
                            QCRecord("b", [{"from": "gpt", "value": wrong}], "red.png", img)])
    assert good["chunks"] >= 3 and bad["chunks"] == good["chunks"]
    assert good["first"] == bad["first"]  # a truncating scorer (first 77 tokens) cannot tell them apart
    assert bad["min"] < 0.5 < good["min"]  # the chunked min can
    assert bad["mean"] < good["mean"]


def test_chunks_respect_the_token_window_and_join_short_sentences():
    stub = StubClip()
    long_sentence = " ".join(f"w{i}" for i in range(200))
    chunks = chunk_text(f"Yes. It is red. {long_sentence}.", stub.token_ids, 77, min_words=3)
    assert [len(c) for c in chunks] == [4, 75, 75, 50]  # "Yes. It is red." joined; 200 tokens windowed
    assert chunk_text("", stub.token_ids, 77) == []


def test_real_clip_from_disk_scores_chunks(backbones, tmp_path):
    img = tmp_path / "x.png"
    h.scene_image(img, seed=3, size=32)
    clip = HFClip(backbones["clip"])
    assert clip.max_tokens == 77
    text = "a red circle at the top left. " * 40  # far past 77 tokens
    op = ClipMatch(ClipMatch.Settings(model=backbones["clip"]))
    stats = op.compute([QCRecord("x", [{"from": "gpt", "value": text}], "x.png", img),
                        QCRecord("t", [{"from": "gpt", "value": "a text only answer here"}], None, None),
                        QCRecord("s", [{"from": "gpt", "value": "red"}], "x.png", img)])
    s = stats[0]
    assert s["chunks"] == 40 and -1 <= s["min"] <= s["mean"] <= 1
    assert stats[1] == {} and stats[2] == {}  # no image / too short to judge
    ids = [clip.token_ids(t) for t in ("a red circle", "a blue square below it")]
    emb = clip.encode_texts(ids)
    assert emb.shape[0] == 2 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_clip_rank_flags_answers_that_fit_other_images_better(tmp_path):
    """Relative matching: a swapped answer fits some other image better than its own."""
    from PIL import Image

    from allava.quality.ops.clip_rank import ClipRank

    recs = []
    for i, colour in enumerate(COLOURS * 3):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), h.COLOURS[colour]).save(p)
        wrong = COLOURS[(COLOURS.index(colour) + 1) % 4]
        said = wrong if i == 5 else colour
        recs.append(QCRecord(f"r{i}", [{"from": "gpt", "value": f"The whole picture is {said} from edge to edge."}],
                             p.name, p))
    op = ClipRank(ClipRank.Settings(k=11), encoder=StubClip())
    stats = op.finalize(op.features(recs))
    assert stats[5]["rank_pct"] > 0.2 and stats[5]["margin"] < 0
    assert all(s["rank_pct"] == 0 and s["margin"] > 0 for k, s in enumerate(stats) if k != 5)

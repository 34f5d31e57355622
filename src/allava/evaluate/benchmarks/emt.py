"""EMT on CIFAR-10 (Zhai et al., 2023): classification by prompting with the ten label names.

Reads the CIFAR-10 python release (``cifar-10-batches-py/test_batch`` + ``batches.meta``) or an
image folder with one sub-folder per class. An answer is right when it names the true class and
no other (EMT's rule before its optional GPT re-check of ambiguous answers).
"""
from __future__ import annotations

import pickle
import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import Benchmark, BenchmarkError, Sample, only_answered, pct

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYNONYMS = {"airplane": ("airplane", "aeroplane", "plane"), "automobile": ("automobile", "car")}


def named_classes(text: str, classes: tuple[str, ...]) -> set[str]:
    words = " " + re.sub(r"[^a-z]+", " ", text.lower()) + " "
    out = set()
    for c in classes:
        for name in SYNONYMS.get(c, (c,)):
            if re.search(rf" {name}(s|es)? ", words):
                out.add(c)
    return out


@register_benchmark("emt-cifar10")
class EMTCifar10(Benchmark):
    convention = ("EMT CIFAR-10 test: prompt 'What is the object in the image? Please only answer a single object "
                  "in <10 labels>.'; correct iff the answer names the true class and no other (plural and "
                  "car/plane synonyms allowed); no GPT re-check")
    data_help = "cifar-10-batches-py/ (python release) or a folder of <class>/ image sub-folders"
    max_new_tokens = 32

    def load(self, path: Path) -> list[Sample]:
        batch = next((p for p in (path / "test_batch", path / "cifar-10-batches-py" / "test_batch") if p.is_file()), None)
        if batch is not None:
            with open(batch, "rb") as fh:
                try:  # the official release is a pickle: load only files you downloaded from the source
                    d = pickle.load(fh, encoding="bytes")
                    data, labels = d[b"data"], d[b"labels"]
                except (pickle.UnpicklingError, KeyError, EOFError) as e:
                    raise BenchmarkError(f"{self.name}: {batch}: not a CIFAR-10 python batch ({e})") from None
            classes = CIFAR10
            meta = batch.parent / "batches.meta"
            if meta.is_file():
                with open(meta, "rb") as fh:
                    classes = tuple(n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"])
            samples = []
            for i, (row, label) in enumerate(zip(data, labels)):
                img = _hwc(row)
                samples.append(self._sample(str(i), img, classes[label], classes))
            return samples
        if path.is_dir():
            images = {d: [f for f in sorted(d.iterdir()) if f.suffix.lower() in (".png", ".jpg", ".jpeg")]
                      for d in sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))}
            empty = [d.name for d, fs in images.items() if not fs]
            if len(images) - len(empty) >= 2 and empty:  # a class without images is not this layout
                raise BenchmarkError(f"{self.name}: {path}: class folder(s) {', '.join(empty)} hold no images; "
                                     f"--data must be {self.data_help}")
            if len(images) >= 2 and not empty:  # one folder is no classification task (a wrong --data)
                classes = tuple(d.name for d in images)
                return [self._sample(f"{d.name}/{f.name}", f, d.name, classes) for d, fs in images.items() for f in fs]
        raise self.missing(f"a CIFAR-10 test_batch or <class>/ image folders in {path}")

    def _sample(self, qid: str, image, label: str, classes: tuple[str, ...]) -> Sample:
        prompt = ("What is the object in the image? Please only answer a single object in "
                  f"{', '.join(classes)}.")
        return Sample(qid, prompt, image, label, {"classes": list(classes)})

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        per_class: dict[str, list[bool]] = defaultdict(list)
        ambiguous = 0
        for s in samples:
            named = named_classes(answers[s.question_id], tuple(s.meta["classes"]))
            ambiguous += len(named) != 1
            per_class[s.target].append(named == {s.target})
        hits = [ok for v in per_class.values() for ok in v]
        acc = sum(hits) / max(1, len(hits))
        return {"headline": {"EMT-c10": pct(acc)}, "accuracy": pct(acc), "n": len(hits), "n_missing": n_missing,
                "no_or_several_classes_named": ambiguous,
                "per_class": {k: pct(sum(v) / len(v)) for k, v in sorted(per_class.items())},
                "convention": self.convention}


def _hwc(row) -> Image.Image:
    """CIFAR rows are 3072 bytes, channel-major (1024 R, then G, then B)."""
    import numpy as np

    return Image.fromarray(np.asarray(row, dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0), "RGB")

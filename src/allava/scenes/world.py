"""Build the whole offline dataset on disk: the miniature ALLaVA / LLaVA / StableLLaVA world.

Layout of `out_dir`:
    images/train/{id}.png, images/bench/{id}.png   (record paths are relative to images/)
    captions.jsonl    stage-1 caption records (ALLaVA-Caption stand-in)              [teacher "inline"]
    instruct.jsonl    ALLaVA-Instruct records + single-turn short-VQA records, the same number per ability
                                                                                     [teacher "inline"]
    teacher_items.jsonl  {"id", "image", "scene"} per train image: the source `allava synth` reads
                      with the scene teacher, which writes the caption and ALLaVA records instead
                                                                                     [teacher "synth"]
    short_vqa.jsonl   the short-VQA records alone                                    [teacher "synth"]
    text.jsonl        text-only records (Evol-Instruct stand-in)
    lm_docs.jsonl     text-form scene conversations for stage-0 LM pretraining (the Phi-2 corpus stand-in)
    clip_pairs.jsonl  {"image", "caption", "negatives"} for contrastive CLIP training (hard negatives:
                      the caption with one shape, colour or cell changed)
    corpus.txt        one text per line for LM (and tokenizer) pretraining
    bench.jsonl       held-out short-answer benchmark, balanced per ability
    bench_meta.json   answer space, chance and n per ability
    world.json        the config and counts, for provenance
Train, text-only and bench scenes come from disjoint seed ranges, so the benchmark is held out.
"""
from __future__ import annotations

import io
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from allava.scenes.abilities import ABILITIES, QA, SHORT_ANSWER_PROMPT, ask
from allava.scenes.graph import Scene, SceneConfig, sample_scene
from allava.scenes.render import render
from allava.scenes.teacher import (
    BRIEF_DESCRIPTION_INSTRUCTIONS,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
    allava_laion,
    allava_record,
    caption_record,
    clip_caption,
    clip_hard_negatives,
    clip_patch_labels,
    lm_doc,
    text_record,
    vqa_record,
)

SEED_STRIDE = 10**6  # each WorldConfig.seed owns [seed * STRIDE, (seed + 1) * STRIDE)
TEXT_OFFSET = 600_000
BENCH_OFFSET = 800_000
BENCH_MAX_SCENES = SEED_STRIDE - BENCH_OFFSET
FRESH_SEEDS = 1_000  # the top of the train range, never a training image: fresh scenes (the report's transcript)
STALL_LIMIT = 300  # scenes without progress before an answer cap is relaxed
TEACHER_MODES = ("inline", "synth")
TEACHER_DIR = "teacher"  # teacher "synth": the `allava synth` run folder under the world, and its export
TEACHER_ITEMS = "teacher_items.jsonl"  # its source


@dataclass
class WorldConfig:
    seed: int = 0
    n_train_images: int = 3000
    n_bench_per_ability: int = 40
    image_size: int = 96
    n_text: int = 1500
    vqa_per_ability: int = 0  # single-turn short-answer records per ability (stage 2); 0: n_train_images
    # multiplier of vqa_per_ability by ability (1 where absent): practice where the LM learns slowest
    vqa_ability_weights: dict[str, float] = field(default_factory=dict)
    # per ability, this many more train images on which it can be asked (StableLLaVA's images made
    # for an ability): short-VQA records only, so the rare abilities' records stop repeating images
    ability_images: dict[str, int] = field(default_factory=dict)
    vqa_phrasings: int = 3  # question phrasings drawn per scene, so repeated records read differently
    n_lm_scenes: int = 0  # text-form scene conversations for stage-0 LM pretraining (lm_docs.jsonl)
    # "inline": the scene-graph teacher is called here (captions.jsonl, instruct.jsonl); "synth": only
    # its source is written (teacher_items.jsonl) and `allava synth allava-laion --teacher scene` makes them
    teacher: str = "inline"

    def __post_init__(self) -> None:
        if self.teacher not in TEACHER_MODES:
            raise ValueError(f"world.teacher must be one of {', '.join(TEACHER_MODES)}, got {self.teacher!r}")
        if (not 0 < self.n_train_images <= TEXT_OFFSET - FRESH_SEEDS
                or not 0 <= self.n_text + self.n_lm_scenes <= BENCH_OFFSET - TEXT_OFFSET):
            raise ValueError("n_train_images / n_text + n_lm_scenes exceed their seed ranges")
        _check_weights("vqa_ability_weights", self.vqa_ability_weights, ABILITIES)
        _check_weights("ability_images", self.ability_images, ABILITIES)


def _check_weights(name: str, weights: dict[str, float], known) -> None:
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; known: {sorted(known)}")
    negative = sorted(k for k, w in weights.items() if not w >= 0)
    if negative:
        raise ValueError(f"{name}: weights must be >= 0, got {', '.join(f'{k}={weights[k]}' for k in negative)}")


@dataclass
class WorldFiles:
    root: Path
    images: Path
    captions: Path
    instruct: Path
    text: Path
    clip_pairs: Path
    corpus: Path
    bench: Path
    bench_meta: Path
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def train_seed(cfg: WorldConfig, i: int) -> int:
    return cfg.seed * SEED_STRIDE + i


def text_seed(cfg: WorldConfig, i: int) -> int:
    return cfg.seed * SEED_STRIDE + TEXT_OFFSET + i


def bench_seed(cfg: WorldConfig, j: int) -> int:
    return cfg.seed * SEED_STRIDE + BENCH_OFFSET + j


def _bar(total: int, desc: str, progress: bool, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)


def save_png(img: Image.Image, path: Path) -> None:
    """Encode in memory then write once: much faster than Image.save(path) on busy disks."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def instruction_files(root: str | Path) -> list[Path]:
    """The world's stage-2 image records in either layout: `instruct.jsonl` (teacher "inline"), or the
    synthesized teacher's `teacher/instructions.jsonl` + `short_vqa.jsonl` (teacher "synth"); [] if neither."""
    root = Path(root)
    if (root / "instruct.jsonl").is_file():
        return [root / "instruct.jsonl"]
    synth = [root / TEACHER_DIR / "instructions.jsonl", root / "short_vqa.jsonl"]
    return synth if all(f.is_file() for f in synth) else []


def instruction_records(root: str | Path) -> list[dict]:
    return [r for f in instruction_files(root) for r in read_jsonl(f)]


def _texts(record: dict) -> list[str]:
    """Every turn of a record as plain text (no <image> token) for the LM corpus."""
    return [t["value"].replace("<image>\n", "") for t in record["conversations"]]


def _build_train(cfg: WorldConfig, scfg: SceneConfig, img_dir: Path, progress: bool) -> dict[str, list]:
    out: dict[str, list] = {"captions": [], "instruct": [], "clip": [], "teacher_items": []}
    pools: dict[str, list] = {}
    with _bar(cfg.n_train_images, "train images", progress) as bar:
        for i in range(cfg.n_train_images):
            seed = train_seed(cfg, i)
            scene = sample_scene(seed, scfg)
            rid = f"train-{i:06d}"
            image = f"train/{rid}.png"
            save_png(render(scene), img_dir / f"{rid}.png")
            if cfg.teacher == "inline":
                rng = random.Random(f"teacher/{seed}")
                teacher_out = allava_laion(scene, rng)
                out["captions"].append(caption_record(f"{rid}-cap", image, scene, teacher_out, rng))
                out["instruct"].append(allava_record(f"{rid}-allava", image, scene, teacher_out))
            else:
                out["teacher_items"].append({"id": rid, "image": image, "scene": scene.to_dict()})
            for ability, qas in all_qas(scene, seed, cfg.vqa_phrasings).items():
                pools.setdefault(ability, []).extend((rid, image, scene, qa) for qa in qas)
            out["clip"].append({"image": image, "caption": clip_caption(scene),
                                "negatives": clip_hard_negatives(scene, random.Random(f"negatives/{seed}")),
                                "patch_labels": clip_patch_labels(scene)})
            bar.update()
    for ability, rid, image, scene in _ability_images(cfg, scfg, img_dir, progress):
        for a, qas in all_qas(scene, scene.seed, cfg.vqa_phrasings).items():
            pools.setdefault(a, []).extend((rid, image, scene, qa) for qa in qas)
    out["instruct"] += balanced_vqa(pools, cfg.vqa_per_ability or cfg.n_train_images,
                                     random.Random(f"vqa-balance/{cfg.seed}"), cfg.vqa_ability_weights)
    return out


def _ability_images(cfg: WorldConfig, scfg: SceneConfig, img_dir: Path, progress: bool):
    """`cfg.ability_images[a]` more train scenes on which ability `a` can be asked: the next train
    seeds after the captioned images, kept when the ability applies (so a record's seed still
    gives its scene back with the default sampler). Yields (ability, id, image, scene)."""
    if not cfg.ability_images:
        return
    i = cfg.n_train_images
    with _bar(sum(cfg.ability_images.values()), "ability images", progress) as bar:
        for ability in sorted(cfg.ability_images):
            made = 0
            while made < cfg.ability_images[ability]:
                if i >= TEXT_OFFSET - FRESH_SEEDS:
                    raise ValueError(f"world.ability_images: the train seed range ran out finding {ability!r} scenes")
                seed = train_seed(cfg, i)
                scene = sample_scene(seed, scfg)
                if ask(scene, random.Random(seed), [ability]).get(ability):
                    rid = f"train-{i:06d}"
                    save_png(render(scene), img_dir / f"{rid}.png")
                    made += 1
                    bar.update()
                    yield ability, rid, f"train/{rid}.png", scene
                i += 1


def all_qas(scene: Scene, seed: int, phrasings: int) -> dict[str, list[QA]]:
    """Every question the scene allows, in up to `phrasings` phrasings each (distinct texts)."""
    out: dict[str, dict[str, QA]] = {}
    for k in range(phrasings):
        for ability, qas in ask(scene, random.Random(f"vqa/{seed}/{k}")).items():
            for qa in qas:
                out.setdefault(ability, {}).setdefault(qa.question, qa)
    return {a: list(v.values()) for a, v in out.items()}


def balanced_vqa(pools: dict[str, list], per_ability: int, rng: random.Random,
                 weights: dict[str, float] | None = None) -> list[dict]:
    """`per_ability` single-turn short-answer records per ability, times its weight (the benchmark
    weighs abilities equally; the raw pools do not: counting applies to every scene, OCR to one
    kind in five).

    Drawn without replacement while a pool lasts, then cycled, so rare abilities repeat their
    records rather than the common ones crowding them out (the review's principle 10, balance).
    Shuffled so that one image's questions are spread over the run.
    """
    rows = []
    for ability in sorted(pools):
        pool = list(pools[ability])
        rng.shuffle(pool)
        for j in range(round(per_ability * (weights or {}).get(ability, 1.0))):
            rid, image, scene, qa = pool[j % len(pool)]
            rows.append(vqa_record(f"{rid}-{ability}-{j}", image, scene, [qa]))
    rng.shuffle(rows)
    return rows


def _build_text(cfg: WorldConfig, scfg: SceneConfig, progress: bool) -> list[dict]:
    rows = []
    with _bar(cfg.n_text, "text-only", progress, unit="rec") as bar:
        for i in range(cfg.n_text):
            seed = text_seed(cfg, i)
            rows.append(text_record(f"text-{i:06d}", sample_scene(seed, scfg), random.Random(f"text/{seed}")))
            bar.update()
    return rows


def _build_lm_docs(cfg: WorldConfig, scfg: SceneConfig, progress: bool) -> list[dict]:
    """Text-form conversations on scenes of the text range after the text-only records' seeds."""
    rows = []
    with _bar(cfg.n_lm_scenes, "LM text scenes", progress, unit="doc") as bar:
        for i in range(cfg.n_lm_scenes):
            seed = text_seed(cfg, cfg.n_text + i)
            rows.append(lm_doc(f"lm-{i:06d}", sample_scene(seed, scfg), random.Random(f"lm/{seed}")))
            bar.update()
    return rows


def _pick_bench_qa(qas: dict[str, list[QA]], needy: list[str], answers: dict[str, Counter], slack: dict[str, int],
                   rng: random.Random) -> QA | None:
    """The least-filled ability with a QA whose answer is among its least-used ones (within `slack`)."""
    for name in needy:
        floor = min(answers[name][ans] for ans in ABILITIES[name].answer_space)
        ok = [qa for qa in qas.get(name, []) if answers[name][qa.answer] < floor + slack[name]]
        if ok:
            fewest = min(answers[name][qa.answer] for qa in ok)
            return rng.choice([qa for qa in ok if answers[name][qa.answer] == fewest])
    return None


def _build_bench(cfg: WorldConfig, scfg: SceneConfig, img_dir: Path, progress: bool) -> list[dict]:
    """n questions per ability, one per image, answers balanced round-robin (slack grows when an answer is rare)."""
    names, n = list(ABILITIES), cfg.n_bench_per_ability
    answers = {a: Counter() for a in names}
    slack = {a: 1 for a in names}
    stall = Counter()
    rows: list[dict] = []
    with _bar(n * len(names), "benchmark", progress) as bar:
        for j in range(BENCH_MAX_SCENES):
            needy = [a for a in names if sum(answers[a].values()) < n]
            if not needy:
                break
            needy.sort(key=lambda a: sum(answers[a].values()))
            seed = bench_seed(cfg, j)
            scene = sample_scene(seed, scfg)
            rng = random.Random(f"bench/{seed}")
            qa = _pick_bench_qa(ask(scene, rng, needy), needy, answers, slack, rng)
            for a in needy:
                stall[a] = 0 if qa is not None and qa.ability == a else stall[a] + 1
                if stall[a] > STALL_LIMIT:
                    slack[a], stall[a] = slack[a] + 1, 0
            if qa is None:
                continue
            rid = f"bench-{len(rows):05d}"
            save_png(render(scene), img_dir / f"{rid}.png")
            answers[qa.ability][qa.answer] += 1
            rows.append({"id": rid, "image": f"bench/{rid}.png", "question": qa.question, "answer": qa.answer,
                         "ability": qa.ability, "prompt": f"{qa.question}\n{SHORT_ANSWER_PROMPT}", "seed": seed})
            bar.update()
        else:
            raise RuntimeError("benchmark could not be filled; an ability almost never applies")
    rows.sort(key=lambda r: (names.index(r["ability"]), r["id"]))
    return rows


def bench_meta(rows: list[dict]) -> dict:
    n = Counter(r["ability"] for r in rows)
    return {
        "abilities": {
            name: {"answer_space": list(ab.answer_space), "chance": ab.chance, "n": n[name]}
            for name, ab in ABILITIES.items()
        },
        "short_answer_prompt": SHORT_ANSWER_PROMPT,
        "n": len(rows),
    }


def corpus_lines(records: list[dict]) -> list[str]:
    """Every turn of `records` as one whitespace-normalised line, exact duplicates dropped (order of
    first appearance): the LM / tokenizer corpus form."""
    return list(dict.fromkeys(" ".join(t.split()) for r in records for t in _texts(r)))


def _corpus(groups: list[list[dict]], clip: list[dict]) -> list[str]:
    """All training text, one per line, exact duplicates dropped (order of first appearance)."""
    lines: dict[str, None] = dict.fromkeys(
        (*BRIEF_DESCRIPTION_INSTRUCTIONS, *DETAILED_DESCRIPTION_INSTRUCTIONS, SHORT_ANSWER_PROMPT))
    lines.update(dict.fromkeys(corpus_lines([r for rows in groups for r in rows])))
    for c in clip:
        lines[c["caption"]] = None
    return list(lines)


def build_world(out_dir: str | Path, cfg: WorldConfig | None = None, progress: bool = True) -> WorldFiles:
    """Render and write the full dataset; the same config gives byte-identical files."""
    cfg = cfg or WorldConfig()
    t0 = time.perf_counter()
    root = Path(out_dir)
    images = root / "images"
    for sub in ("train", "bench"):
        (images / sub).mkdir(parents=True, exist_ok=True)
    scfg = SceneConfig(image_size=cfg.image_size)
    files = WorldFiles(root, images, root / "captions.jsonl", root / "instruct.jsonl", root / "text.jsonl",
                       root / "clip_pairs.jsonl", root / "corpus.txt", root / "bench.jsonl", root / "bench_meta.json")

    train = _build_train(cfg, scfg, images / "train", progress)
    text = _build_text(cfg, scfg, progress)
    lm_docs = _build_lm_docs(cfg, scfg, progress)
    bench = _build_bench(cfg, scfg, images / "bench", progress)
    corpus = _corpus([train["captions"], train["instruct"], text], train["clip"])

    if cfg.teacher == "inline":
        _write_jsonl(files.captions, train["captions"])
        _write_jsonl(files.instruct, train["instruct"])
    else:
        _write_jsonl(root / TEACHER_ITEMS, train["teacher_items"])
        _write_jsonl(root / "short_vqa.jsonl", train["instruct"])
    _write_jsonl(files.text, text)
    _write_jsonl(root / "lm_docs.jsonl", lm_docs)
    _write_jsonl(files.clip_pairs, train["clip"])
    _write_jsonl(files.bench, bench)
    files.corpus.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    files.bench_meta.write_text(json.dumps(bench_meta(bench), indent=2) + "\n", encoding="utf-8")
    vqa_key = "instruct" if cfg.teacher == "inline" else "short_vqa"
    files.counts = {"train_images": cfg.n_train_images, "ability_images": sum(cfg.ability_images.values()),
                    "captions": len(train["captions"]),
                    vqa_key: len(train["instruct"]), "teacher_items": len(train["teacher_items"]), "text": len(text), "lm_docs": len(lm_docs), "clip_pairs": len(train["clip"]),
                    "bench": len(bench), "corpus_lines": len(corpus)}
    (root / "world.json").write_text(json.dumps({"config": asdict(cfg), "counts": files.counts}, indent=2) + "\n",
                                     encoding="utf-8")
    files.seconds = time.perf_counter() - t0
    return files

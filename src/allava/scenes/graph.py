"""Scene graphs: the ground truth every image, caption and answer is derived from.

A scene is a 3x3 grid of cells holding simple shapes, everyday objects or a printed word.
At 96 px each cell is 32 px, exactly one patch of the quickstart's tiny ViT (patch 32), so a tiny
vision encoder can localise, colour and name every object. The teacher reads the graph (never
the pixels), which stands in for GPT-4V reading an image in the ALLaVA pipeline.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

GRID = 3

# Well separated colours, none close to the light or sky/ground backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (25, 150, 45),
    "blue": (30, 65, 215),
    "yellow": (245, 200, 0),
    "purple": (135, 45, 180),
    "orange": (250, 125, 10),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = {"small": 0.45, "large": 0.85}  # diameter as a fraction of the cell

# Everyday objects for outdoor scenes; where each one normally belongs.
SKY_THINGS = ("sun", "cloud")
GROUND_THINGS = ("tree", "house", "car", "flower")
THINGS = ("tree", "house", "car", "flower", "sun", "cloud", "fish")
COLORED_THINGS = ("car", "house")  # body colour is drawn from COLORS; others are fixed
THING_SIZE = 0.9

WORDS = ("CAT", "DOG", "SUN", "STOP", "BUS", "MOON", "FISH", "BOOK", "STAR")

POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_NAMES = tuple(p for row in POSITIONS for p in row)

KINDS = ("shapes", "shapes_word", "odd", "objects", "abnormal")

PLURALS = {"cross": "crosses", "fish": "fish", "house": "houses"}


def plural(name: str, n: int = 2) -> str:
    """English plural of an object name (only the irregular ones are listed)."""
    return name if n == 1 else PLURALS.get(name, name + "s")


@dataclass(frozen=True)
class SceneObject:
    """One thing in one grid cell. `category` is "shape", "thing" or "word"."""

    category: str
    name: str  # shape name, thing name, or "word"
    cell: tuple[int, int]  # (row, col)
    color: str | None = None
    size: str = "large"
    offset: tuple[int, int] = (0, 0)  # (dx, dy) jitter in output pixels
    text: str | None = None  # the printed word, upper case
    abnormal: bool = False

    @property
    def position(self) -> str:
        return POSITIONS[self.cell[0]][self.cell[1]]

    @property
    def region(self) -> str:
        """"sky" or "ground" in outdoor scenes (sky fills the top two rows)."""
        return "ground" if self.cell[0] == GRID - 1 else "sky"


@dataclass(frozen=True)
class Scene:
    """A whole image: background plus objects. Everything else is derived from this."""

    seed: int
    kind: str
    image_size: int
    background: str  # "plain" or "outdoor"
    tint: tuple[int, int, int]
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    @property
    def shapes(self) -> list[SceneObject]:
        return [o for o in self.objects if o.category == "shape"]

    @property
    def things(self) -> list[SceneObject]:
        return [o for o in self.objects if o.category == "thing"]

    @property
    def word(self) -> SceneObject | None:
        return next((o for o in self.objects if o.category == "word"), None)

    @property
    def abnormal(self) -> SceneObject | None:
        return next((o for o in self.objects if o.abnormal), None)

    @property
    def items(self) -> list[SceneObject]:
        """Countable objects: shapes in shape scenes, things in outdoor scenes (not the word)."""
        return [o for o in self.objects if o.category != "word"]

    def at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if o.cell == (row, col)), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        objs = tuple(
            SceneObject(**{**o, "cell": tuple(o["cell"]), "offset": tuple(o["offset"])}) for o in d["objects"]
        )
        return cls(**{**d, "tint": tuple(d["tint"]), "objects": objs})


@dataclass(frozen=True)
class SceneConfig:
    """What the sampler draws. Kind weights are tuned so every ability is asked often."""

    image_size: int = 96
    kind_weights: tuple[tuple[str, float], ...] = (
        ("shapes", 0.26),
        ("shapes_word", 0.2),
        ("odd", 0.14),
        ("objects", 0.16),
        ("abnormal", 0.24),
    )
    max_shapes: int = 6
    jitter: int = 3  # max offset in pixels at 96 px (scaled with image_size)


def _cell(i: int) -> tuple[int, int]:
    return divmod(i, GRID)


def _offset(rng: random.Random, cfg: SceneConfig) -> tuple[int, int]:
    j = round(cfg.jitter * cfg.image_size / 96)
    return rng.randint(-j, j), rng.randint(-j, j)


def _shape(rng: random.Random, cfg: SceneConfig, cell: int, name: str | None = None, color: str | None = None,
           size: str | None = None) -> SceneObject:
    return SceneObject(
        category="shape",
        name=name or rng.choice(SHAPES),
        cell=_cell(cell),
        color=color or rng.choice(list(COLORS)),
        size=size or rng.choice(list(SIZES)),
        offset=_offset(rng, cfg),
    )


def _thing(rng: random.Random, cfg: SceneConfig, name: str, cell: tuple[int, int], abnormal: bool = False) -> SceneObject:
    color = rng.choice(list(COLORS)) if name in COLORED_THINGS else None
    return SceneObject("thing", name, cell, color=color, offset=_offset(rng, cfg), abnormal=abnormal)


def _shapes_scene(rng: random.Random, cfg: SceneConfig, n: int, word: bool) -> list[SceneObject]:
    cells = rng.sample(range(GRID * GRID), n + int(word))
    objs = [_shape(rng, cfg, c) for c in cells[:n]]
    if word:
        objs.append(SceneObject("word", "word", _cell(cells[n]), color="black", text=rng.choice(WORDS)))
    return objs


def _odd_scene(rng: random.Random, cfg: SceneConfig) -> list[SceneObject]:
    """All shapes share a shape name except one; colour and size may or may not be shared."""
    n = rng.randint(3, cfg.max_shapes)
    common, odd = rng.sample(SHAPES, 2)
    color = rng.choice(list(COLORS)) if rng.random() < 0.5 else None
    size = rng.choice(list(SIZES)) if rng.random() < 0.5 else None
    cells = rng.sample(range(GRID * GRID), n)
    return [_shape(rng, cfg, c, name=odd if i == 0 else common, color=color, size=size) for i, c in enumerate(cells)]


def _outdoor_scene(rng: random.Random, cfg: SceneConfig, abnormal: bool) -> list[SceneObject]:
    """Sky things in the top row, ground things in the bottom row; optionally one misplaced."""
    sky_cols, ground_cols = rng.sample(range(GRID), GRID), rng.sample(range(GRID), GRID)
    objs: list[SceneObject] = []
    odd = rng.choice(THINGS) if abnormal else None
    if odd is not None:
        in_sky = odd in GROUND_THINGS or (odd == "fish" and rng.random() < 0.5)
        cell = (0, sky_cols.pop()) if in_sky else (GRID - 1, ground_cols.pop())
        objs.append(_thing(rng, cfg, odd, cell, abnormal=True))
    sky_pool = [t for t in SKY_THINGS if t != odd]
    ground_pool = [t for t in GROUND_THINGS if t != odd]
    n_sky = rng.randint(0 if abnormal else 1, min(2, len(sky_cols)))
    for _ in range(n_sky):
        options = [t for t in sky_pool if not (t == "sun" and any(o.name == "sun" for o in objs))]
        if not options:
            break
        objs.append(_thing(rng, cfg, rng.choice(options), (0, sky_cols.pop())))
    n_ground = rng.randint(1, min(3, len(ground_cols)))
    for _ in range(n_ground):
        objs.append(_thing(rng, cfg, rng.choice(ground_pool), (GRID - 1, ground_cols.pop())))
    return objs


def _tint(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(-12, 12), rng.randint(-12, 12), rng.randint(-12, 12)


def sample_scene(seed: int, cfg: SceneConfig | None = None) -> Scene:
    """Draw one scene; the same seed and config always give the same scene."""
    cfg = cfg or SceneConfig()
    rng = random.Random(seed)
    kinds, weights = zip(*cfg.kind_weights)
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "shapes":
        objs = _shapes_scene(rng, cfg, rng.randint(1, cfg.max_shapes), word=False)
    elif kind == "shapes_word":
        objs = _shapes_scene(rng, cfg, rng.randint(1, min(4, cfg.max_shapes)), word=True)
    elif kind == "odd":
        objs = _odd_scene(rng, cfg)
    elif kind in ("objects", "abnormal"):
        objs = _outdoor_scene(rng, cfg, abnormal=kind == "abnormal")
    else:
        raise ValueError(f"unknown scene kind {kind!r}")
    background = "outdoor" if kind in ("objects", "abnormal") else "plain"
    objs.sort(key=lambda o: o.cell)  # reading order: stable captions
    return Scene(seed, kind, cfg.image_size, background, _tint(rng), tuple(objs))

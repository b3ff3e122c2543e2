"""The embedded world: generated captioned scenes with planted relations and word masks.

Every scene is drawn from a generator keyed by (seed, scene id), so the world needs no
files and is the same on every machine and rank. A scene holds one object (70%) or two
(left and right); an object has a shape, a colour, a size and a position, and may carry
a centre dot. Captions come from templates; every word that names or describes an
object has a ground-truth mask (the object's pixels).

Planted relations, each with a control (what MI / CMI / PID should show):

| relation | how it is planted | expected signature | control |
|---|---|---|---|
| synonym | a red object is called "red" (50%), "scarlet" (30%) or "scarlet red" (20%) | PID of (scarlet, red) in "scarlet red" captions: redundancy dominates | (big, red): two words about different features, unique terms dominate |
| synergy | single objects get "wavy" and "spotted" each with p 1/2, independently; the centre dot is drawn iff exactly one of them is in the caption (XOR) | PID of (wavy, spotted): synergy dominates, unique terms near 0 | (big, red) |
| biased co-occurrence | a "cross" is red with p 0.85 (else another colour, uniform); other shapes take colours uniformly | redundancy of (red, cross) above that of (blue, cross) or (green, cross) | the other colours with cross |
| homonym | "bat" names a horizontal bar after "baseball" and a V shape after "cave" | PID of (bat, baseball) / (bat, cave): synergy | a shape word with its colour |
| distractors | "lovely", "nice", "pretty" inserted at random; they change nothing in the image | CMI near 0, like function words | object words |

Splits are fixed id ranges: train, threshold selection, held out (:data:`SPLITS`).

A *shifted* world (``new_colour="purple"``) repaints each object, with probability
``p_shift``, in a colour the bundled model never saw, named by the colour's name or
by ``new_word``. The demo names it "lovely", a distractor the bundled model learned to
ignore, and watches that word's information rise as the model learns its new meaning (a
word the model never read is a worse probe: its letter tokens perturb the text encoding,
so the orthogonal estimate of an unknown word starts high before it means anything).
The unshifted scenes are untouched (the repainting draws from its own generator).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..draws import id_generator
from .datamodule import SplitCaptionData

__all__ = ["colour_candidates", "NEW_COLOURS", "shift_scene", "WorldObject", "Scene", "sample_scene", "render_scene", "word_masks", "caption_of", "COLOURS", "SHAPES",
           "DISTRACTORS", "FUNCTION_WORDS", "SPLITS", "split_ids", "attribute_swap", "left_right_swap",
           "shuffled_words", "WORLD_VOCABULARY", "CaptionedWorld", "CaptionedWorldData", "object_mask"]

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "yellow": (1.0, 1.0, -1.0)}
#: Colours outside the bundled model's training world (the shifted world of the demo).
NEW_COLOURS = {"purple": (1.0, -1.0, 1.0)}
#: Shapes named by one word; "bar" and "vee" are named "bat" with a context word.
SHAPES = ("square", "circle", "cross", "triangle")
HOMONYM = {"bar": "baseball", "vee": "cave"}  # shape -> context word; both are called "bat"
SIZES = ("small", "big")
POSITIONS_ONE = ("left", "right", "top", "bottom")
SYNONYM = "scarlet"
XOR_WORDS = ("wavy", "spotted")
DISTRACTORS = ("lovely", "nice", "pretty")
FUNCTION_WORDS = ("a", "the", "on", "and")
BACKGROUND = -0.6
DOT = (1.0, 1.0, 1.0)

#: Probabilities of the generator (documented in the module table).
P_TWO_OBJECTS = 0.3
P_HOMONYM = 0.15
P_CROSS_RED = 0.85
P_XOR_WORD = 0.5
P_DISTRACTOR = 0.3

#: Fixed id ranges: (first id, number of scenes) of each split.
SPLITS = {"train": (0, 20000), "threshold": (20000, 500), "heldout": (20500, 1000)}

WORLD_VOCABULARY = sorted(set(FUNCTION_WORDS) | set(COLOURS) | set(SHAPES) | set(SIZES) | set(POSITIONS_ONE)
                          | {SYNONYM, "bat", *HOMONYM.values(), *XOR_WORDS, *DISTRACTORS})


@dataclass(frozen=True)
class WorldObject:
    shape: str  # one of SHAPES or a HOMONYM key
    colour: str
    size: str
    position: str
    colour_words: tuple[str, ...] = ()  # how the caption names the colour ("red", "scarlet", ...)
    noun: str | None = None  # the shape's name in the caption when not its own (a shifted world)
    modifiers: tuple[str, ...] = ()  # XOR words in the caption
    dot: bool = False


@dataclass(frozen=True)
class Scene:
    id: int
    objects: tuple[WorldObject, ...]
    distractor: str | None = None
    extra: dict = field(default_factory=dict, compare=False)
    background: str | None = None  # a colour of NEW_COLOURS (a shifted world), else grey

    @property
    def caption(self) -> str:
        return caption_of(self)


def split_ids(split: str) -> range:
    """The scene ids of a split ("train", "threshold", "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    first, n = SPLITS[split]
    return range(first, first + n)


def _pick(options: Sequence, g: torch.Generator):
    return options[int(torch.randint(len(options), (), generator=g))]


def _u(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _colour_for(shape: str, g: torch.Generator) -> str:
    if shape == "cross":  # the biased co-occurrence
        return "red" if _u(g) < P_CROSS_RED else _pick(["green", "blue", "yellow"], g)
    return _pick(list(COLOURS), g)


def _colour_words(colour: str, g: torch.Generator) -> tuple[str, ...]:
    if colour != "red":
        return (colour,)
    r = _u(g)  # the synonym: red 50%, scarlet 30%, scarlet red 20%
    return ("red",) if r < 0.5 else (SYNONYM,) if r < 0.8 else (SYNONYM, "red")


def sample_scene(scene_id: int, seed: int = 0) -> Scene:
    """Scene ``scene_id`` of the world with ``seed`` (see the module doc for the rules)."""
    g = id_generator(seed, scene_id)
    two = _u(g) < P_TWO_OBJECTS
    positions = ("left", "right") if two else (_pick(POSITIONS_ONE, g),)
    objects = []
    for pos in positions:
        shape = _pick(list(HOMONYM), g) if _u(g) < P_HOMONYM else _pick(SHAPES, g)
        colour = _colour_for(shape, g)
        obj = WorldObject(shape, colour, _pick(SIZES, g), pos, _colour_words(colour, g))
        if not two:  # the XOR pair: the dot iff exactly one of the two words is said
            mods = tuple(w for w in XOR_WORDS if _u(g) < P_XOR_WORD)
            obj = replace(obj, modifiers=mods, dot=len(mods) == 1)
        objects.append(obj)
    distractor = _pick(DISTRACTORS, g) if _u(g) < P_DISTRACTOR else None
    return Scene(scene_id, tuple(objects), distractor)


def _object_phrase(o: WorldObject) -> list[str]:
    noun = [o.noun] if o.noun else ["bat"] if o.shape in HOMONYM else [o.shape]
    context = [HOMONYM[o.shape]] if o.shape in HOMONYM else []
    return ["a", o.size, *o.modifiers, *o.colour_words, *context, *noun]


def caption_of(scene: Scene) -> str:
    """The template caption: "a [lovely] big wavy scarlet red cross on the left", or
    "a small red square on the left and a big blue circle on the right"."""
    parts = []
    for k, o in enumerate(scene.objects):
        phrase = _object_phrase(o)
        if k == 0 and scene.distractor is not None:
            phrase.insert(1, scene.distractor)
        parts.append(" ".join(phrase + ["on", "the", o.position]))
    return " and ".join(parts)


#: The repainting of a shifted world draws from id_generator(seed + this, scene id).
SHIFT_SEED_OFFSET = 7919


#: The shape that ``shift="shape"`` renames.
RENAMED_SHAPE = "cross"


def shift_scene(scene: Scene, shift: str, p_shift: float = 0.5, seed: int = 0, new_word: str | None = None,
                new_colour: str = "purple") -> Scene:
    """``scene`` in a shifted world. ``shift="shape"``: each :data:`RENAMED_SHAPE` is named
    ``new_word`` instead, with probability ``p_shift`` (the images are unchanged: the word
    becomes a synonym of a shape the model knows). ``shift="object"``: each object is repainted in
    ``new_colour`` (one of :data:`NEW_COLOURS`) with probability ``p_shift`` and named
    by ``new_word`` alone (default: the colour's name). ``shift="background"``: with
    probability ``p_shift`` the scene's background is ``new_colour`` and its caption
    carries ``new_word`` where a distractor goes ("a lovely big red cross ..."), else the
    caption does not hold the word. Either way ``new_word`` has one meaning in the shifted
    world: a distractor is no longer inserted at random."""
    if shift not in ("object", "background", "shape"):
        raise ValueError(f"shift must be 'shape', 'object' or 'background', got {shift!r}")
    if new_colour not in NEW_COLOURS:
        raise ValueError(f"new_colour must be one of {', '.join(NEW_COLOURS)}, got {new_colour!r}")
    if not 0 <= p_shift <= 1:
        raise ValueError(f"p_shift must be in [0, 1], got {p_shift}")
    word = new_word or new_colour
    if shift == "shape" and not new_word:
        raise ValueError("shift 'shape' needs new_word (the shape's new name)")
    if not word.isalpha() or not word.islower():
        raise ValueError(f"new_word must be one lowercase word, got {new_word!r}")
    g = id_generator(seed + SHIFT_SEED_OFFSET, scene.id)
    if shift == "shape":
        objects = tuple(replace(o, noun=word) if o.shape == RENAMED_SHAPE and _u(g) < p_shift else o
                        for o in scene.objects)
        return replace(scene, objects=objects, distractor=None if scene.distractor == word else scene.distractor)
    if shift == "background":
        if _u(g) < p_shift:
            return replace(scene, distractor=word, background=new_colour)
        return replace(scene, distractor=None if scene.distractor == word else scene.distractor)
    objects = tuple(replace(o, colour=new_colour, colour_words=(word,)) if _u(g) < p_shift else o
                    for o in scene.objects)
    return replace(scene, objects=objects, distractor=None if scene.distractor == word else scene.distractor)


# ----------------------------------------------------------------------------- pixels

def _centre(position: str, size: int) -> tuple[int, int]:
    quarter = size // 4
    return {"left": (size // 2, quarter), "right": (size // 2, size - quarter), "top": (quarter, size // 2),
            "bottom": (size - quarter, size // 2)}[position]


def object_mask(o: WorldObject, size: int) -> torch.Tensor:
    """(size, size) bool: the object's pixels (its shape at its position and size)."""
    cy, cx = _centre(o.position, size)
    r = max(2, round(size * (0.2 if o.size == "big" else 0.11)))
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dy, dx = yy - cy, xx - cx
    ay, ax = dy.abs(), dx.abs()
    w = max(1, r // 3)
    if o.shape == "square":
        return (ay <= r) & (ax <= r)
    if o.shape == "circle":
        return dy**2 + dx**2 <= r**2
    if o.shape == "cross":
        return ((ay <= r) & (ax <= w)) | ((ax <= r) & (ay <= w))
    if o.shape == "triangle":  # apex up: the half-width grows from the top row down
        return (dy >= -r) & (dy <= r) & (ax <= (dy + r) / 2)
    if o.shape == "bar":
        return (ay <= w) & (ax <= r)
    if o.shape == "vee":  # two strokes meeting at the bottom
        return (dy >= -r) & (dy <= r) & ((ax - (r - dy) / 2).abs() <= w)
    raise ValueError(f"unknown shape {o.shape!r}")


def render_scene(scene: Scene, size: int = 32) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: grey background, each object in its colour, the centre
    dot (white, 3x3 pixels; 1 pixel below 24 px) where the object carries one."""
    img = torch.full((3, size, size), BACKGROUND)
    if scene.background is not None:
        img[:] = torch.tensor(NEW_COLOURS[scene.background])[:, None, None] * -BACKGROUND
    for o in scene.objects:
        mask = object_mask(o, size)
        img[:, mask] = torch.tensor({**COLOURS, **NEW_COLOURS}[o.colour])[:, None]
        if o.dot:
            cy, cx = _centre(o.position, size)
            d = 1 if size >= 24 else 0
            img[:, cy - d:cy + d + 1, cx - d:cx + d + 1] = torch.tensor(DOT)[:, None, None]
    return img


def word_masks(scene: Scene, size: int = 32) -> dict[str, torch.Tensor]:
    """Ground-truth (size, size) masks of the caption words that name or describe an
    object: the object's pixels. Function words and distractors have none. A word that
    describes both objects of a scene gets the union."""
    out: dict[str, torch.Tensor] = {}
    for o in scene.objects:
        mask = object_mask(o, size)
        for w in _object_phrase(o)[1:] + [o.position]:
            out[w] = out[w] | mask if w in out else mask.clone()
    if scene.background is not None and scene.distractor is not None:  # the word names the background
        covered = torch.zeros(size, size, dtype=torch.bool)
        for o in scene.objects:
            covered |= object_mask(o, size)
        out[scene.distractor] = ~covered
    return out


# ----------------------------------------------------------------------------- hard negatives

def attribute_swap(scene: Scene) -> str | None:
    """The caption of a two-object scene with the two objects' colours swapped (a
    VG-Attribution-style negative); None for one object or equal colours."""
    if len(scene.objects) != 2 or scene.objects[0].colour_words == scene.objects[1].colour_words:
        return None
    a, b = scene.objects
    swapped = (replace(a, colour_words=b.colour_words), replace(b, colour_words=a.colour_words))
    return caption_of(replace(scene, objects=swapped))


def left_right_swap(scene: Scene) -> str | None:
    """The caption of a two-object scene with "left" and "right" exchanged (a
    VG-Relation-style negative); None for one object or two objects with equal phrases."""
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects
    swapped = (replace(a, position=b.position), replace(b, position=a.position))
    caption = caption_of(replace(scene, objects=swapped))
    return None if caption == caption_of(scene) else caption


def colour_candidates(scene: Scene) -> tuple[list[str], int] | None:
    """Attribute recognition on a one-object scene: the caption with the object's colour
    named each of the :data:`COLOURS` in turn (the true one keeps its own words, "scarlet"
    included), and the index of the true caption; None for two objects or a new colour."""
    if len(scene.objects) != 1 or scene.objects[0].colour not in COLOURS:
        return None
    o = scene.objects[0]
    captions = [scene.caption if c == o.colour else caption_of(replace(scene, objects=(replace(o, colour_words=(c,)),)))
                for c in COLOURS]
    return captions, list(COLOURS).index(o.colour)


def shuffled_words(caption: str, generator: torch.Generator) -> str:
    """The caption's words in a random order that differs from the original (a
    COCO-Order-style negative); the caption itself when it has fewer than two distinct words."""
    words = caption.split()
    if len(set(words)) < 2:
        return caption
    while True:
        order = torch.randperm(len(words), generator=generator).tolist()
        out = " ".join(words[i] for i in order)
        if out != caption:
            return out


# ----------------------------------------------------------------------------- datasets

class CaptionedWorld(Dataset):
    """The scenes of one split: items {"id", "image" (3, size, size) in [-1, 1], "caption", "error"}.
    ``shift`` (None: the world itself), ``p_shift``, ``new_word``, ``new_colour``: a shifted
    world (:func:`shift_scene`)."""

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0, limit: int | None = None,
                 shift: str | None = None, p_shift: float = 0.5, new_word: str | None = None,
                 new_colour: str = "purple"):
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 (objects need a few pixels), got {image_size}")
        if shift is not None:
            shift_scene(sample_scene(0, seed), shift, p_shift, seed, new_word, new_colour)  # validates options
        ids = split_ids(split)
        self.ids = ids if limit is None else ids[:limit]
        self.split, self.image_size, self.seed = split, image_size, seed
        self.new_colour, self.p_shift, self.new_word, self.shift = new_colour, p_shift, new_word, shift

    def __len__(self) -> int:
        return len(self.ids)

    def scene(self, i: int) -> Scene:
        return self.scene_of_id(self.ids[i])

    def scene_of_id(self, scene_id: int) -> Scene:
        scene = sample_scene(scene_id, self.seed)
        if self.shift is not None:
            scene = shift_scene(scene, self.shift, self.p_shift, self.seed, self.new_word, self.new_colour)
        return scene

    def true_masks(self, item: dict) -> dict[str, torch.Tensor]:
        """The word masks (:func:`word_masks`) of an item of this dataset, by its id."""
        return word_masks(self.scene_of_id(int(item["id"])), self.image_size)

    def caption(self, i: int) -> str:
        return self.scene(i).caption

    def __getitem__(self, i: int) -> dict:
        scene = self.scene(i)
        return {"id": scene.id, "image": render_scene(scene, self.image_size), "caption": scene.caption, "error": ""}


class CaptionedWorldData(SplitCaptionData):
    """The world for fine-tuning (train split; the first held-out scenes are the validation
    and probe items) and for analysis (``test_split``: "heldout" by default, "threshold",
    or "train"). ``limit_*`` cut a split to its first scenes (quick runs, tests).
    ``shift``, ``p_shift``, ``new_word``, ``new_colour``: a shifted world for every split
    (:func:`shift_scene`; ``shift=None``: the world itself)."""

    name = "world scenes"

    def __init__(self, image_size: int = 32, batch_size: int = 64, seed: int = 0, num_workers: int = 0,
                 test_split: str = "heldout", limit_train: int | None = None, limit_test: int | None = None,
                 n_val: int = 64, shift: str | None = None, p_shift: float = 0.5,
                 new_word: str | None = None, new_colour: str = "purple"):
        super().__init__()
        self.save_hyperparameters()
        shift = {"new_colour": new_colour, "p_shift": p_shift, "new_word": new_word, "shift": shift}
        self.train_set = CaptionedWorld("train", image_size, seed, limit_train, **shift)
        self.val_set = CaptionedWorld("heldout", image_size, seed, n_val, **shift)
        self.test_set = CaptionedWorld(test_split, image_size, seed, limit_test, **shift)

    def describe_test_split(self) -> str:
        hp = self.hparams
        what = {"object": f"{hp.new_colour} objects", "background": f"{hp.new_colour} backgrounds",
                "shape": f"{RENAMED_SHAPE}es", None: ""}[hp.shift]
        shift = "" if hp.shift is None else f", shifted: {what} called {hp.new_word or hp.new_colour}"
        return super().describe_test_split() + shift

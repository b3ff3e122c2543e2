r"""Exact text-image alignment on the embedded world: does an image show what its caption says?

A world caption makes a finite set of visual claims (data/world.py): per object a shape
("bat" + "baseball" is the bar, "bat" + "cave" the vee), a colour ("scarlet" and "scarlet
red" are red), a position (one object: left, right, top or bottom; two objects: left and
right), a size when "small" or "big" is said, and the centre dot, which the world draws
iff exactly one of "wavy" / "spotted" is in the object's phrase (two-object phrases carry
none, so their objects have no dot). Distractors ("lovely", "nice", "pretty") and function
words claim nothing. :func:`parse_prompt` reads these claims.

The image is read with the world's renderer as the reference (:func:`read_scene`): every
object the world can draw (slot x shape x size x dot, each at the offsets -2..2 px, so a
slightly displaced object still matches) is a template, the mask of :func:`object_mask`
(and the 3x3 dot of :func:`render_scene`). The slots are the world's four and the image
centre (no caption puts an object there, a generated image may). A template's gain over
plain background, on the image x,

    D(m) = sum_{i in m \ dot} min_c ||x_i - c||^2 + sum_{i in dot} ||x_i - white||^2
           - sum_{i in m} ||x_i - bg||^2                                              (D)

(c over the four COLOURS), is the change in squared error when the template's pixels are
drawn as an object instead of background: the least-squares fit of the silhouette,
each pixel free to take any of the world's colours, so an object painted in two colours
is still found with its shape. Objects are read by matching pursuit: the template of least
D, if D < 0 (more object than background), is an object; its pixels grown by one count as
explained; the next is the best template at another slot with at least half its pixels
unexplained, D over those; until no template has D < 0. A two-object world scene (left and
right never touch) is read as the joint fit reads it.

An object's colour is the colour nearest to the mean of its non-dot pixels (the
least-squares colour: every colour has the same norm); its purity is the share of those
pixels nearest to that colour among background, COLOURS and white. A colour claim holds
when the colour is right and the purity is at least :data:`PURITY`. Its fit is the
intersection over union of its template and the non-background pixels within 2 px of
it (other objects' templates left out); a shape claim holds when the shape is right and
the fit is at least :data:`SHAPE_FIT` (a shape the world does not draw is read as its
nearest template, with a low fit).

:func:`score_alignment` pairs each claimed object with the object read at its position
(else with an object read elsewhere, matching the position claim false; else absent) and
gives per-attribute verdicts; the image is aligned when every claimed object is present
with the right colour, shape, position, size (when said) and dot, and nothing else is
there. ``check_dot=False`` leaves the dot out of ``aligned`` (colour, shape, position
and size only); the dot verdict is reported either way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

from ..data.world import (BACKGROUND, COLOURS, DISTRACTORS, DOT, FUNCTION_WORDS, HOMONYM, POSITIONS_ONE, SHAPES,
                          SIZES, SYNONYM, XOR_WORDS, WorldObject, _centre, object_mask)

__all__ = ["ObjectClaim", "SeenObject", "parse_prompt", "read_scene", "judge_reading", "score_alignment",
           "score_alignment_batch", "ALL_SHAPES", "OFFSETS", "SLOTS", "PURITY", "SHAPE_FIT"]

#: Every shape the world draws ("bar" and "vee" are the two meanings of "bat").
ALL_SHAPES = (*SHAPES, *HOMONYM)
#: Offsets (pixels, in y and in x) at which each template is also tried: a generated
#: object a pixel or two off its slot is still that object at that slot (slots are 8 px
#: apart at 32 px). With +-1 only, held-out renders moved by up to 2 px were read
#: exactly in 248 of 300; with +-2, in 300 of 300.
OFFSETS = (-2, -1, 0, 1, 2)
#: The world's two-object layout.
TWO_POSITIONS = ("left", "right")
#: Where objects are read: the world's four slots and the image centre, where no caption
#: puts an object but a generated image may (an object there is misplaced or extra).
SLOTS = (*POSITIONS_ONE, "centre")
#: The least share of an object's (non-dot) pixels nearest to its colour for the colour
#: to count (an object drawn half red, half blue is not red). Gaussian noise of sd 0.3
#: moves 0.1-0.3% of a colour's pixels nearer to another palette entry, sd 0.5 5-7%.
PURITY = 0.75
#: The least fit (intersection over union of the template and the non-background pixels
#: within 2 px of it, other objects' templates left out) for the shape to count: a shape
#: the world does not draw (a 13 x 17 rectangle) reads as its nearest template (a 13 x 13
#: square) at a fit of 0.76; a small square missing one edge row of its 9 fits at 0.89.
#: Held-out renders moved, recoloured and tinted (benchmarks/world_alignment_validation.py)
#: with noise of sd 0.3 fit at 0.89 or more (200 scenes); at sd 0.5, where a pixel is
#: read as the wrong palette entry 5-10% of the time, fits fall to 0.63.
SHAPE_FIT = 0.85
_CONTEXT = {word: shape for shape, word in HOMONYM.items()}  # "baseball" -> "bar"


@dataclass(frozen=True)
class ObjectClaim:
    """What a caption says of one object. ``size`` is None when the caption does not say it;
    ``dot``: the world draws the centre dot (exactly one XOR word in the phrase)."""

    shape: str
    colour: str
    position: str
    size: str | None
    dot: bool


@dataclass(frozen=True)
class SeenObject:
    """An object read off an image: its slot (``SLOTS``), shape, colour, size, dot, its
    gain D (eq. D, lower is a clearer object), purity (the share of its non-dot pixels
    nearest to its colour among background, COLOURS and the dot's white) and fit (the
    intersection over union of its template and the foreground around it)."""

    shape: str
    colour: str
    position: str
    size: str
    dot: bool
    gain: float
    purity: float
    fit: float


# ----------------------------------------------------------------------------- the caption

def _parse_clause(words: list[str], prompt: str) -> ObjectClaim:
    colours, shapes, sizes, positions, context, xor = set(), [], set(), [], [], 0
    for w in words:
        if w in COLOURS:
            colours.add(w)
        elif w == SYNONYM:
            colours.add("red")
        elif w in SHAPES:
            shapes.append(w)
        elif w == "bat":
            shapes.append("bat")
        elif w in _CONTEXT:
            context.append(_CONTEXT[w])
        elif w in SIZES:
            sizes.add(w)
        elif w in POSITIONS_ONE:
            positions.append(w)
        elif w in XOR_WORDS:
            xor += 1
        elif w not in FUNCTION_WORDS and w not in DISTRACTORS:
            raise ValueError(f"word {w!r} of prompt {prompt!r} is not in the world's vocabulary")
    if len(shapes) != 1:
        raise ValueError(f"each object of prompt {prompt!r} needs exactly one shape word, got {shapes or 'none'}")
    shape = shapes[0]
    if (shape == "bat") != (len(context) == 1) or len(context) > 1:
        raise ValueError(f"prompt {prompt!r}: 'bat' needs exactly one of {sorted(_CONTEXT)} and they only go with it")
    if len(colours) != 1:
        raise ValueError(f"each object of prompt {prompt!r} needs exactly one colour, got {sorted(colours) or 'none'}")
    if len(positions) != 1:
        raise ValueError(f"each object of prompt {prompt!r} needs exactly one position, got {positions or 'none'}")
    if len(sizes) > 1:
        raise ValueError(f"prompt {prompt!r} gives one object two sizes")
    return ObjectClaim(context[0] if shape == "bat" else shape, colours.pop(), positions[0],
                       sizes.pop() if sizes else None, xor == 1)


def parse_prompt(prompt: str) -> tuple[ObjectClaim, ...]:
    """The objects a world caption claims, in caption order: one, or two joined by "and"
    (at left and right, the world's two-object layout). Raises ValueError on a word outside
    the world's vocabulary or a phrase the templates cannot produce."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    clauses, current = [], []
    for w in prompt.lower().split():
        if w == "and":  # "and" only joins objects in the world's templates
            clauses.append(current)
            current = []
        else:
            current.append(w)
    clauses.append(current)
    if len(clauses) > 2:
        raise ValueError(f"prompt {prompt!r} names {len(clauses)} objects; the world has one or two")
    claims = tuple(_parse_clause(c, prompt) for c in clauses)
    if len(claims) == 2 and sorted(c.position for c in claims) != sorted(TWO_POSITIONS):
        raise ValueError(f"prompt {prompt!r}: two objects go left and right in the world")
    return claims


# ----------------------------------------------------------------------------- the image

def _shifted(mask: Tensor, dy: int, dx: int) -> Tensor:
    """``mask`` moved by (dy, dx) pixels, what leaves the image dropped (no wrapping)."""
    out = torch.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@lru_cache(maxsize=4)
def _templates(size: int) -> tuple[list[tuple[str, str, str, bool]], Tensor, Tensor]:
    """Every object the world draws at ``size``: keys (position, shape, size, dot), the
    object masks (T, size * size) and the dot masks (T, size * size), float, each at every
    offset of :data:`OFFSETS` (an offset repeats the key)."""
    keys, masks, dots = [], [], []
    d = 1 if size >= 24 else 0
    for pos in SLOTS:
        at = "left" if pos == "centre" else pos  # the centre: the left slot moved right
        move = size // 2 - _centre("left", size)[1] if pos == "centre" else 0
        cy, cx = _centre(at, size)
        cx += move
        for shape in ALL_SHAPES:
            for sz in SIZES:
                mask = _shifted(object_mask(WorldObject(shape, "red", sz, at), size), 0, move)
                dot = torch.zeros(size, size, dtype=torch.bool)
                dot[cy - d:cy + d + 1, cx - d:cx + d + 1] = True
                for has_dot in (False, True):
                    body = mask | dot if has_dot else mask  # the dot is drawn even off the shape (a vee's centre)
                    for oy in OFFSETS:
                        for ox in OFFSETS:
                            keys.append((pos, shape, sz, has_dot))
                            masks.append(_shifted(body, oy, ox).flatten())
                            dots.append(_shifted(dot & has_dot, oy, ox).flatten())
    return keys, torch.stack(masks).float(), torch.stack(dots).float()


_PALETTE = torch.tensor(list(COLOURS.values()))  # (4, 3)
_NAMES = list(COLOURS)
_READ_PALETTE = torch.cat([torch.full((1, 3), BACKGROUND), _PALETTE, torch.tensor([DOT])])  # bg, colours, white


def _pixel_costs(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per pixel of ``x`` (3, N): squared distance to the nearest colour of COLOURS, to the
    dot's white and to the background, each (N,)."""
    to = lambda c: ((x.T[:, None, :] - c) ** 2).sum(-1)  # noqa: E731  (N, K)
    return to(_PALETTE).min(1).values, to(torch.tensor([DOT]))[:, 0], to(torch.full((1, 3), BACKGROUND))[:, 0]


def _gains(costs: tuple[Tensor, Tensor, Tensor], masks: Tensor, dots: Tensor, keep: Tensor) -> Tensor:
    """Eq. (D) of every template (T,) over the pixels in ``keep`` (N,)."""
    colour, white, bg = costs
    m, d = masks * keep, dots * keep
    return (m - d) @ colour + d @ white - m @ bg


def _grow(mask: Tensor, size: int) -> Tensor:
    """The mask (N,) grown by one pixel in each direction (8-neighbourhood)."""
    m = mask.view(1, 1, size, size)
    return (torch.nn.functional.max_pool2d(m, 3, stride=1, padding=1) > 0).flatten()


def _check_image(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"image must be a square (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if image.shape[1] < 16:
        raise ValueError(f"image must be at least 16 px (the world's smallest), got {image.shape[1]}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image holds non-finite values")
    return image.detach().float().cpu().clamp(-1, 1)


def read_scene(image: Tensor) -> list[SeenObject]:
    """The world objects an image (3, H, W) in [-1, 1] shows, by matching pursuit over the
    world's templates (module doc), clearest first; at most one per slot."""
    x = _check_image(image)
    size = x.shape[1]
    keys, masks, dots = _templates(size)
    x = x.reshape(3, -1)
    costs = _pixel_costs(x)
    nearest = ((x.T[:, None, :] - _READ_PALETTE) ** 2).sum(-1).argmin(1)  # (N,) index into _READ_PALETTE
    slot = torch.tensor([SLOTS.index(k[0]) for k in keys])
    explained = torch.zeros(x.shape[1])
    seen, used = [], torch.zeros(len(SLOTS), dtype=torch.bool)
    area = masks.sum(1)
    chosen = []
    while not bool(used.all()):
        keep = 1 - explained
        gain = _gains(costs, masks, dots, keep)
        allowed = ~used[slot] & ((masks * keep).sum(1) >= area / 2)
        gain = torch.where(allowed, gain, torch.full_like(gain, float("inf")))
        t = int(gain.argmin())
        if not float(gain[t]) < 0:
            break
        chosen.append((t, keep, float(gain[t])))
        used[slot[t]] = True
        explained = torch.maximum(explained, _grow(masks[t], size).float())
    foreground = nearest != 0
    for t, keep, gain in chosen:
        pos, shape, sz, has_dot = keys[t]
        body = ((masks[t] - dots[t]) * keep) > 0
        colour = int(((x.T[body].mean(0) - _PALETTE) ** 2).sum(1).argmin())  # nearest to the mean (eq. D's fit)
        purity = float((nearest[body] == 1 + colour).float().mean())
        # the silhouette: foreground up to 2 px around the template, other objects' templates left out
        others = torch.zeros_like(foreground)
        for u, _, _ in chosen:
            if u != t:
                others |= masks[u] > 0
        template = (masks[t] * keep) > 0
        near = _grow(_grow(masks[t], size).float(), size) & ~others & foreground
        fit = float((template & near).sum() / (template | near).sum())
        seen.append(SeenObject(shape, _NAMES[colour], pos, sz, has_dot, gain, purity, fit))
    return seen


# ----------------------------------------------------------------------------- the verdict

def _pair(claims: Sequence[ObjectClaim], seen: list[SeenObject]) -> list[SeenObject | None]:
    """Each claim's object: the one read at its position, else the unpaired one agreeing
    on most of shape, colour and size, else None."""
    out: list[SeenObject | None] = [next((s for s in seen if s.position == c.position), None) for c in claims]
    free = [s for s in seen if s not in out]
    for k, c in enumerate(claims):
        if out[k] is None and free:
            best = max(free, key=lambda s: (s.shape == c.shape) + (s.colour == c.colour) + (s.size == c.size))
            out[k] = best
            free.remove(best)
    return out


def _verdicts(claim: ObjectClaim, obj: SeenObject | None, check_dot: bool) -> dict:
    if obj is None:
        v = {"present": False, "colour": False, "shape": False, "position": False,
             "size": None if claim.size is None else False, "dot": False}
    else:
        v = {"present": True, "colour": obj.colour == claim.colour and obj.purity >= PURITY,
             "shape": obj.shape == claim.shape and obj.fit >= SHAPE_FIT,
             "position": obj.position == claim.position,
             "size": None if claim.size is None else obj.size == claim.size, "dot": obj.dot == claim.dot}
    checked = ["present", "colour", "shape", "position"] + (["size"] if claim.size else []) + (["dot"] if check_dot else [])
    v["correct"] = all(v[a] for a in checked)
    v["claim"], v["seen"] = asdict(claim), None if obj is None else asdict(obj)
    return v


def _judge(seen: list[SeenObject], claims: tuple[ObjectClaim, ...], prompt: str, check_dot: bool) -> dict:
    paired = _pair(claims, seen)
    objects = [_verdicts(c, o, check_dot) for c, o in zip(claims, paired)]
    extra = [asdict(s) for s in seen if s not in paired]
    out = {"prompt": prompt, "objects": objects, "extra": extra}
    for a in ("present", "colour", "shape", "position", "dot"):
        out[a] = all(o[a] for o in objects)  # the attribute right on every claimed object
    sizes = [o["size"] for o in objects if o["size"] is not None]
    out["size"] = all(sizes) if sizes else None
    out["aligned"] = all(o["correct"] for o in objects) and not extra
    return out


def judge_reading(seen: list[SeenObject], prompt: str, check_dot: bool = True) -> dict:
    """The verdicts of :func:`score_alignment` for an image already read (:func:`read_scene`):
    one reading serves every prompt of the same image."""
    return _judge(seen, parse_prompt(prompt), prompt, check_dot)


def score_alignment(image: Tensor, prompt: str, check_dot: bool = True) -> dict:
    """Whether ``image`` (3, H, W) in [-1, 1] shows ``prompt`` (a world caption) exactly.

    Returns {"prompt", "objects": per claimed object {"claim", "seen", "present", "colour",
    "shape", "position", "size" (None if not said), "dot", "correct"}, "extra": objects read
    that no claim pairs with, the attribute verdicts over all objects ("present", "colour",
    "shape", "position", "size", "dot"), "aligned": every object correct and no extra}.
    ``check_dot``: whether the centre dot (drawn iff exactly one XOR word) counts in
    "correct" and "aligned"."""
    claims = parse_prompt(prompt)  # a bad prompt fails before the image is read
    return _judge(read_scene(image), claims, prompt, check_dot)


def score_alignment_batch(images: Tensor, prompts: Sequence[str], check_dot: bool = True) -> list[dict]:
    """:func:`score_alignment` of each (image, prompt) pair of ``images`` (B, 3, H, W)."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
    claims = [parse_prompt(p) for p in prompts]  # every prompt checked before any image is read
    return [_judge(read_scene(im), c, p, check_dot) for im, c, p in zip(images, claims, prompts)]

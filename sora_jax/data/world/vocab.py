"""The world's vocabulary and data model: palette, shapes, motions, splits, Scene, WorldObject.

Everything else in `sora_jax.data.world` imports from here and nothing here imports back.
Units: y runs 0 (top) to 1 (bottom) of the frame, x is measured in frame heights from the frame
centre, and time in seconds (see the package docstring).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

# Saturated, mutually distant colours: after blurring to 32 px each one's blob core is still
# nearer its own name than any other name or the dark, low-saturation backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 35, 35),
    "green": (40, 200, 60),
    "blue": (45, 90, 255),
    "yellow": (245, 230, 40),
    "magenta": (225, 45, 225),
    "cyan": (40, 225, 235),
    "orange": (255, 140, 20),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
MOTIONS: tuple[str, ...] = ("bounce", "cross", "fall", "rotate", "grow", "shrink", "orbit")
SIZES: dict[str, float] = {"small": 0.06, "medium": 0.085, "large": 0.115}  # frame heights
MAX_OBJECTS = 3
SPLITS = ("train", "validation", "test", "test_compositional")
# Directions each motion can be captioned with (the evaluator checks them from pixels).
DIRECTIONS: dict[str, tuple[str | None, ...]] = {
    "bounce": ("left", "right", "up", "down"),
    "cross": ("left", "right"),
    "fall": ("down",),
    "rotate": ("clockwise", "counterclockwise"),
    "grow": (None,),
    "shrink": (None,),
    "orbit": ("clockwise", "counterclockwise"),
}
# Triples no object ever has in train/validation/test; the primary object of every
# 'test_compositional' scene has one. Each colour, shape and motion is still seen in training.
HELD_OUT_COMBOS: frozenset[tuple[str, str, str]] = frozenset({
    ("red", "star", "orbit"),
    ("blue", "circle", "fall"),
    ("green", "square", "rotate"),
    ("yellow", "triangle", "grow"),
    ("magenta", "circle", "bounce"),
    ("cyan", "star", "shrink"),
    ("orange", "square", "cross"),
    ("white", "triangle", "orbit"),
})



@dataclasses.dataclass
class WorldObject:
  """One object. (x, y) is the start centre; for `orbit` it is the orbit's centre."""
  color: str
  shape: str
  size: str
  motion: str
  direction: str | None
  x: float
  y: float
  vx: float = 0.0  # frame heights / s
  vy: float = 0.0
  angle: float = 0.0  # radians; positive turns clockwise on screen (y points down)
  omega: float = 0.0  # rad / s (rotate, orbit)
  orbit_radius: float = 0.0
  scale: float = 1.0  # radius multiplier of the world preset ('large': 2)

  @property
  def radius(self) -> float:
    return SIZES[self.size] * self.scale


@dataclasses.dataclass
class Scene:
  """A world: objects[0] is the primary object, the one the short caption describes."""
  seed: int
  split: str
  objects: list[WorldObject]
  background: dict[str, Any]
  occluder: dict[str, float] | None = None  # {'x', 'width', 'shade'}: a full-height pillar
  pan: float = 0.0  # camera x velocity, frame heights / s
  # Shot cuts: None = one continuous shot. Else shots in time order, each {'start': s,
  # 'zoom': z[, 'at': t]}: from `start` the camera shows zoom 1 (the wide view, which follows
  # `pan`) or a close-up at `zoom`, held still on where the primary is at time `at`.
  shots: list[dict[str, float]] | None = None

  def to_dict(self) -> dict[str, Any]:
    d = json.loads(json.dumps(dataclasses.asdict(self)))
    if d["shots"] is None:
      del d["shots"]   # single-shot scenes keep the JSON they had before shots existed
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Scene":
    d = dict(d)
    d["objects"] = [WorldObject(**o) for o in d["objects"]]
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_json(cls, s: str) -> "Scene":
    return cls.from_dict(json.loads(s))


def extent(shape: str) -> float:
  """Farthest point of a unit-size shape from its centre (see rendering.OUTLINES)."""
  return {"circle": 1.0, "square": 0.88 * math.sqrt(2), "triangle": 1.35, "star": 1.4}[shape]

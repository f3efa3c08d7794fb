"""The procedural text-video world: scenes, motion, captions and per-frame ground truth.

A scene lives in resolution-free world units: y runs 0 (top) to 1 (bottom) of the frame, x is
measured in frame heights from the frame centre, and time in seconds. The same scene therefore
renders at any resolution, aspect ratio, fps and duration; a wider frame shows more of the world
instead of stretching it. Side walls sit at the frame's left/right edges (x = ±aspect/2) and the
floor at y = 1, so `bounce` and `fall` are closed-form (reflections and ballistic arcs) at any
time t, which keeps rendering free of a stateful simulation.

Everything here is numpy and deterministic from `(seed, split)`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

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

GRAVITY = 1.2  # frame heights / s^2: a full-height fall lasts ~1.3 s, ≤ 0.2 frame/step at 8 fps
RESTITUTION = 0.72
GROW_FACTOR, SHRINK_FACTOR, SCALE_TAU = 2.0, 0.4, 0.9  # saturating: scale → factor over ~tau s


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

  @property
  def radius(self) -> float:
    return SIZES[self.size]


@dataclasses.dataclass
class Scene:
  """A world: objects[0] is the primary object, the one the short caption describes."""
  seed: int
  split: str
  objects: list[WorldObject]
  background: dict[str, Any]
  occluder: dict[str, float] | None = None  # {'x', 'width', 'shade'}: a full-height pillar
  pan: float = 0.0  # camera x velocity, frame heights / s

  def to_dict(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))

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


# ----------------------------------------------------------------------------- trajectories
def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Position of a point moving freely in [lo, hi] with elastic reflections (triangle wave)."""
  span = hi - lo
  if span <= 0:
    return np.full_like(p, 0.5 * (lo + hi))
  u = np.mod(p - lo, 2 * span)
  return lo + np.where(u > span, 2 * span - u, u)


def _fall(y0: float, vy0: float, floor: float, t: np.ndarray) -> np.ndarray:
  """Ballistic fall onto `floor` with damped bounces, closed form in t."""
  y0 = min(y0, floor)
  t1 = (-vy0 + math.sqrt(vy0 * vy0 + 2 * GRAVITY * (floor - y0))) / GRAVITY
  y = np.where(t < t1, y0 + vy0 * t + 0.5 * GRAVITY * t * t, floor)
  v, start = RESTITUTION * (vy0 + GRAVITY * t1), t1
  while v > 0.03:  # each bounce: launched upward at v, back on the floor after 2v/g
    dur = 2 * v / GRAVITY
    s = t - start
    arc = floor - v * s + 0.5 * GRAVITY * s * s
    y = np.where((s >= 0) & (s < dur), arc, y)
    start, v = start + dur, v * RESTITUTION
  return y


def scale_at(obj: WorldObject, t: np.ndarray) -> np.ndarray:
  t = np.asarray(t, np.float64)
  if obj.motion in ("grow", "shrink"):
    k = GROW_FACTOR if obj.motion == "grow" else SHRINK_FACTOR
    return 1.0 + (k - 1.0) * (1.0 - np.exp(-t / SCALE_TAU))
  return np.ones_like(t)


def extent(shape: str) -> float:
  """Farthest point of a unit-size shape from its centre (see world_render's outlines)."""
  return {"circle": 1.0, "square": 0.88 * math.sqrt(2), "triangle": 1.35, "star": 1.4}[shape]


def trajectory(obj: WorldObject, t: np.ndarray, aspect: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """World (x, y) centre, angle and scale of `obj` at times t (s) in a frame of `aspect`."""
  t = np.asarray(t, np.float64)
  scale = scale_at(obj, t)
  e = obj.radius * extent(obj.shape)
  angle = np.full_like(t, obj.angle)
  if obj.motion in ("bounce", "fall"):
    x = _fold(obj.x + obj.vx * t, -aspect / 2 + e, aspect / 2 - e)
    if obj.motion == "bounce":
      y = _fold(obj.y + obj.vy * t, e, 1 - e)
    else:
      y = _fall(obj.y, obj.vy, 1 - e, t)
  elif obj.motion == "cross":
    x, y = obj.x + obj.vx * t, obj.y + obj.vy * t
  elif obj.motion == "orbit":
    phase = obj.angle + obj.omega * t
    x = obj.x + obj.orbit_radius * np.cos(phase)
    y = obj.y + obj.orbit_radius * np.sin(phase)
  else:  # rotate, grow, shrink stay in place
    x, y = np.full_like(t, obj.x), np.full_like(t, obj.y)
    if obj.motion == "rotate":
      angle = obj.angle + obj.omega * t
  return x, y, angle, scale


# ----------------------------------------------------------------------------- sampling
def _rng(seed: int, split: str) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not known; use one of {SPLITS}")
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS.index(split), 0x5EED])


def _object(rng: np.random.Generator, triple: tuple[str, str, str], primary: bool,
            occluder: dict | None) -> WorldObject:
  color, shape, motion = triple
  size = str(rng.choice(list(SIZES)))
  if motion == "shrink" and size == "small":
    size = "medium"  # a small object shrunk to 40% is a few pixels at 32 px
  if primary and occluder is not None and size == "large":
    size = "medium"  # the pillar must be able to hide it completely
  direction = DIRECTIONS[motion][rng.integers(len(DIRECTIONS[motion]))]
  # The primary starts inside any frame with aspect >= 0.8 and has room to show its motion;
  # secondaries may start out of a square frame and wander in.
  span = 0.3 if primary else 0.6
  o = WorldObject(color, shape, size, motion, direction, x=float(rng.uniform(-span, span)),
                  y=float(rng.uniform(0.3, 0.7)), angle=float(rng.uniform(0, 2 * math.pi)))
  speed = float(rng.uniform(0.22, 0.38))
  sign = {"left": -1.0, "right": 1.0, "up": -1.0, "down": 1.0}.get(direction or "", 0.0)
  if motion in ("bounce", "cross"):
    if direction in ("left", "right"):
      o.vx, o.vy = sign * speed, float(rng.uniform(-0.25, 0.25)) * speed
      if primary:  # start on the side it leaves from: ≥ 0.3 of room before any wall
        o.x = float(-sign * rng.uniform(0.05, 0.25))
    else:
      o.vy, o.vx = sign * speed, float(rng.uniform(-0.25, 0.25)) * speed
      if primary:
        o.y = float(0.5 - sign * rng.uniform(0.1, 0.2))
  elif motion == "fall":
    o.y = float(rng.uniform(0.12, 0.3))
    o.vx = float(rng.uniform(-0.08, 0.08))
  elif motion in ("rotate", "orbit"):
    turn = 1.0 if direction == "clockwise" else -1.0
    o.omega = turn * math.radians(float(rng.uniform(70, 150)))
    if motion == "orbit":
      o.orbit_radius = float(rng.uniform(0.14, 0.24))
      o.y = float(rng.uniform(0.4, 0.6))
      o.x = float(rng.uniform(-0.1, 0.1)) if primary else o.x
  return o


def _triple(rng: np.random.Generator, used_colors: set[str]) -> tuple[str, str, str]:
  while True:
    color = str(rng.choice([c for c in COLORS if c not in used_colors]))
    shape = str(rng.choice(SHAPES))
    motion = str(rng.choice(MOTIONS))
    if motion == "rotate" and shape == "circle":
      continue  # a spinning circle looks still: the caption would be unverifiable
    if (color, shape, motion) not in HELD_OUT_COMBOS:
      return color, shape, motion


def _background(rng: np.random.Generator) -> dict[str, Any]:
  """Dark, low-saturation colours so every palette colour segments cleanly against them."""
  def dark():
    base = rng.uniform(18, 60)
    return [float(np.clip(base + rng.uniform(-12, 12), 0, 80)) for _ in range(3)]
  kind = str(rng.choice(["gradient", "texture", "checker"]))
  return {"kind": kind, "color0": dark(), "color1": dark(),
          "angle": float(rng.uniform(0, 2 * math.pi)),
          "freq": [float(f) for f in rng.uniform(6, 16, size=4)],
          "phase": [float(p) for p in rng.uniform(0, 2 * math.pi, size=4)],
          "amplitude": float(rng.uniform(5, 12))}


def sample_scene(seed: int, split: str = "train") -> Scene:
  """A random scene; the same (seed, split) always gives the same scene."""
  rng = _rng(seed, split)
  n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
  if split == "test_compositional":
    combos = sorted(HELD_OUT_COMBOS)
    triples = [combos[rng.integers(len(combos))]]
  else:
    triples = [_triple(rng, set())]
  while len(triples) < n:
    triples.append(_triple(rng, {c for c, _, _ in triples}))
  occluder = None
  if rng.random() < 0.45:
    occluder = {"x": float(rng.uniform(-0.3, 0.3)), "width": 0.0,
                "shade": float(rng.uniform(115, 150))}
  objects = [_object(rng, tr, i == 0, occluder) for i, tr in enumerate(triples)]
  if occluder is not None:
    p = objects[0]
    hide = 2 * p.radius * extent(p.shape)
    occluder["width"] = float(hide + rng.uniform(0.04, 0.08))  # hidden ~0.2-0.5 s
    clear = hide / 2 + occluder["width"] / 2
    if p.motion in ("bounce", "cross") and p.direction in ("left", "right"):
      # Put the pillar on the primary's path so it visibly goes behind and re-emerges.
      occluder["x"] = p.x + math.copysign(clear + float(rng.uniform(0.06, 0.14)), p.vx)
    elif abs(occluder["x"] - p.x) < clear + 0.02:
      # Never hide the primary at t = 0: a still image (frames=1) must show what it says.
      occluder["x"] = p.x + math.copysign(clear + 0.04, occluder["x"] - p.x)
  pan = float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.07)) if rng.random() < 0.3 else 0.0
  return Scene(seed=int(seed), split=split, objects=objects, background=_background(rng),
               occluder=occluder, pan=pan)


# ----------------------------------------------------------------------------- public calls
def render(scene: Scene, frames: int, height: int, width: int, fps: float = 8.0
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """uint8 video [T, H, W, 3] and per-frame ground truth (see world_render.render)."""
  from sora_jax.data import world_render  # imports this module's vocabulary
  return world_render.render(scene, frames, height, width, fps)


def caption(scene: Scene, style: str = "short", seed: int = 0) -> str:
  """A caption of `scene`: 'short' (primary object) or 'detailed' (several sentences)."""
  from sora_jax.data import world_captions  # imports this module's vocabulary
  return world_captions.caption(scene, style, seed)


def generate_clip(seed: int, frames: int, height: int, width: int, fps: float = 8.0,
                  split: str = "train") -> dict[str, Any]:
  """One example: video, captions, scene JSON and fixed-shape ground truth arrays."""
  scene = sample_scene(seed, split)
  video, gt = render(scene, frames, height, width, fps)
  return {
      "video": video,
      "caption": caption(scene, "short", seed),
      "caption_detailed": caption(scene, "detailed", seed),
      "scene_json": scene.to_json(),
      **{k: gt[k] for k in ("positions", "boxes", "visible", "object_valid", "color_ids",
                            "shape_ids", "motion_ids")},
  }

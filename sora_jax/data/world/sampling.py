"""Random scenes: deterministic from `(seed, split)`; held-out combos only in test_compositional."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sora_jax.config_sections import WORLDS
from sora_jax.data.world.physics import GROW_FACTOR
from sora_jax.data.world.vocab import (COLORS, DIRECTIONS, HELD_OUT_COMBOS, MOTIONS, SHAPES,
                                       SIZES, SPLITS, Scene, WorldObject, extent)


def _rng(seed: int, split: str) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not known; use one of {SPLITS}")
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS.index(split), 0x5EED])


def _object(rng: np.random.Generator, triple: tuple[str, str, str], primary: bool,
            occluder: dict | None, free_start: bool = False) -> WorldObject:
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
        u = float(rng.uniform(0.05, 0.25))
        o.x = (u - 0.15) / 0.1 * FREE_BAND if free_start else -sign * u
    else:
      o.vy, o.vx = sign * speed, float(rng.uniform(-0.25, 0.25)) * speed
      if primary:
        u = float(rng.uniform(0.1, 0.2))
        o.y = 0.5 + (u - 0.15) / 0.05 * FREE_BAND if free_start else 0.5 - sign * u
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


# How much of the world a scene may hold (config_sections.WORLD_PRESETS). 'full' is the
# original world (several objects, a pillar that hides the primary, camera pans, textured
# backdrops); 'simple' keeps only what a caption names: one object on a smooth gradient, nothing
# hidden, a still camera. 'large' is 'simple' with the object at twice the radius: 15-30 px
# across in a 64-px frame, 2-4 latent pixels at 8x compression instead of 1-2, so the caption
# explains more of each clip's loss.
# Each preset also comes '<preset>_free': the primary's start no longer depends on its direction.
# In the presets a bouncing or crossing primary starts on the side it leaves from, so its first
# frame gives its direction away: image-to-video then never needs the direction word, and in
# detailed captions "starts near the left side" goes with "moves to the right". '_free' draws the
# start from one band around the centre whatever the direction (the same random draws, mapped
# symmetrically), so only the caption tells which way the object will go.
# And '..._shots' (after '_free' if both): half the clips cut once, from the wide view to a
# close-up of the primary or the other way round (`_shots`), and their captions say so.
MULTI_SHOT_FRACTION = 0.5
CUT_AFTER = (0.8, 1.3)     # seconds: the cut falls mid-clip in the demo's 2-second clips
CLOSE_UP_ZOOM = (1.5, 1.9)
MIN_CLOSE_UP = 1.4
# Half-width of that band (frame heights), the same along x and y.
FREE_BAND = 0.12
_SCALE = {"large": 2.0}
_ONE_OBJECT = ("simple", "large")   # one object on a gradient, no pillar, no pan
# 'grow' doubles an object's size; at 2x scale a large one would outgrow the frame.
_MAX_GROWN_RADIUS = 0.35


def sample_scene(seed: int, split: str = "train", world: str = "full") -> Scene:
  """A random scene; the same (seed, split, world) always gives the same scene.

  world: 'simple' (one object, gradient backdrop, no pillar, no pan), 'large' (the simple world,
  objects at twice the radius), 'standard' (one or two
  objects, any backdrop, the pillar, no pan) or 'full'; each with '_free' appended starts the
  primary in a band around the centre whatever its direction. The random draws are the same in
  every world, so a seed's primary object is the same object in all of them.
  """
  if world not in WORLDS:
    raise ValueError(f"world {world!r} is not known; use one of {', '.join(WORLDS)}")
  world, shots = world.removesuffix("_shots"), world.endswith("_shots")
  world, free_start = world.removesuffix("_free"), world.endswith("_free")
  rng = _rng(seed, split)
  n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
  n = 1 if world in _ONE_OBJECT else min(n, 2) if world == "standard" else n
  if split == "test_compositional":
    combos = sorted(HELD_OUT_COMBOS)
    triples = [combos[rng.integers(len(combos))]]
  else:
    triples = [_triple(rng, set())]
  while len(triples) < n:
    triples.append(_triple(rng, {c for c, _, _ in triples}))
  occluder = None
  if rng.random() < 0.45 and world not in _ONE_OBJECT:
    occluder = {"x": float(rng.uniform(-0.3, 0.3)), "width": 0.0,
                "shade": float(rng.uniform(115, 150))}
  objects = [_object(rng, tr, i == 0, occluder, free_start) for i, tr in enumerate(triples)]
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
  background = _background(rng)
  if world != "full":
    pan = 0.0
  if world in _ONE_OBJECT:
    background["kind"] = "gradient"
  for o in objects:
    o.scale = _SCALE.get(world, 1.0)
    if o.motion == "grow" and o.scale > 1.0:
      o.scale = max(1.0, min(o.scale, _MAX_GROWN_RADIUS / (GROW_FACTOR * SIZES[o.size])))
  scene = Scene(seed=int(seed), split=split, objects=objects, background=background,
                occluder=occluder, pan=pan)
  if shots:
    scene.shots = _shots(np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS.index(split),
                                                0x5407]), objects[0])
  return scene


def _shots(rng: np.random.Generator, primary: WorldObject) -> list[dict[str, float]] | None:
  """Two shots or none, in a generator of their own, so the scene itself is the one the world
  without '_shots' draws. The close-up keeps the primary within the middle 60 % of the frame
  (at least x1.4), so the subject is all there in both shots."""
  if rng.random() >= MULTI_SHOT_FRACTION:
    return None
  cut, zoom = float(rng.uniform(*CUT_AFTER)), float(rng.uniform(*CLOSE_UP_ZOOM))
  reach = primary.radius * extent(primary.shape) * (GROW_FACTOR if primary.motion == "grow" else 1)
  zoom = max(MIN_CLOSE_UP, min(zoom, 0.3 / reach))
  # Framed on where the primary is half a second into the close-up (mid-shot for the first
  # shot), so a moving subject crosses the frame's centre instead of leaving it.
  wide, close = {"start": 0.0, "zoom": 1.0}, {"start": 0.0, "zoom": zoom, "at": 0.5 * cut}
  if rng.random() < 0.5:
    wide["start"] = cut
    return [close, wide]
  close.update(start=cut, at=cut + 0.5)
  return [wide, close]

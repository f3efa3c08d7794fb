"""Closed-form object motion: reflections off the walls, ballistic falls, growth, orbits.

Side walls sit at the frame's left/right edges (x = ±aspect/2) and the floor at y = 1, so
`bounce` and `fall` are closed-form in t, which keeps rendering free of a stateful simulation.
"""
from __future__ import annotations

import math

import numpy as np

from sora_jax.data.world.vocab import WorldObject, extent

GRAVITY = 1.2  # frame heights / s^2: a full-height fall lasts ~1.3 s, ≤ 0.2 frame/step at 8 fps
RESTITUTION = 0.72
GROW_FACTOR, SHRINK_FACTOR, SCALE_TAU = 2.0, 0.4, 0.9  # saturating: scale → factor over ~tau s


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

"""The procedural text-video world: scenes, motion, captions and per-frame ground truth.

A scene lives in resolution-free world units: y runs 0 (top) to 1 (bottom) of the frame, x is
measured in frame heights from the frame centre, and time in seconds. The same scene therefore
renders at any resolution, aspect ratio, fps and duration; a wider frame shows more of the world
instead of stretching it. Side walls sit at the frame's left/right edges (x = ±aspect/2) and the
floor at y = 1, so `bounce` and `fall` are closed-form (reflections and ballistic arcs) at any
time t, which keeps rendering free of a stateful simulation.

Everything here is numpy and deterministic from `(seed, split)`. Modules import one way only:

  vocab     palette, shapes, motions, sizes, splits, held-out combos; Scene, WorldObject, extent
  physics   closed-form trajectories (imports vocab)
  sampling  sample_scene: a random Scene from (seed, split) (imports vocab)
  rendering anti-aliased frames and per-frame ground truth (imports vocab, physics)
  captions  short and detailed captions (imports vocab)
  clip      generate_clip: one example from all of the above

Callers use this package: `from sora_jax.data import world; world.generate_clip(...)`.
"""
from sora_jax.data.world.captions import SHAPE_WORDS, STYLES, caption
from sora_jax.data.world.clip import generate_clip
from sora_jax.data.world.physics import (GRAVITY, GROW_FACTOR, RESTITUTION, SCALE_TAU,
                                         SHRINK_FACTOR, scale_at, trajectory)
from sora_jax.data.world.rendering import VISIBLE_FRACTION, render
from sora_jax.data.world.sampling import WORLDS, sample_scene
from sora_jax.data.world.vocab import (COLORS, DIRECTIONS, HELD_OUT_COMBOS, MAX_OBJECTS, MOTIONS,
                                       SHAPES, SIZES, SPLITS, Scene, WorldObject, extent)

__all__ = [
    "COLORS", "DIRECTIONS", "GRAVITY", "GROW_FACTOR", "HELD_OUT_COMBOS", "MAX_OBJECTS", "MOTIONS",
    "RESTITUTION", "SCALE_TAU", "SHAPES", "SHAPE_WORDS", "SHRINK_FACTOR", "SIZES", "SPLITS",
    "STYLES", "Scene", "VISIBLE_FRACTION", "WORLDS", "WorldObject", "caption", "extent",
    "generate_clip", "render", "sample_scene", "scale_at", "trajectory",
]

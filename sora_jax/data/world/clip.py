"""One training example: a sampled scene rendered, captioned and serialised."""
from __future__ import annotations

from typing import Any

from sora_jax.data.world.captions import caption
from sora_jax.data.world.rendering import render
from sora_jax.data.world.sampling import sample_scene


def generate_clip(seed: int, frames: int, height: int, width: int, fps: float = 8.0,
                  split: str = "train", world: str = "full") -> dict[str, Any]:
  """One example: video, captions, scene JSON and fixed-shape ground truth arrays."""
  scene = sample_scene(seed, split, world)
  if scene.shots and scene.shots[1]["start"] * fps > frames - 1:
    # The clip ends before the cut (a still image, a short clip of a size mix): one shot, and a
    # caption that does not promise a cut the clip never shows.
    scene.shots = None
  video, gt = render(scene, frames, height, width, fps)
  return {
      "video": video,
      "caption": caption(scene, "short", seed),
      "caption_detailed": caption(scene, "detailed", seed),
      "scene_json": scene.to_json(),
      **{k: gt[k] for k in ("positions", "boxes", "visible", "object_valid", "color_ids",
                            "shape_ids", "motion_ids")},
  }

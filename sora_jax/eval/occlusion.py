"""Object permanence across occlusion: does an object that goes behind the pillar come back?

Sora's report claims objects persist when they are occluded or leave the frame. The world's
'standard' and 'full' presets put a grey pillar on the primary object's path in some scenes,
and those scenes' detailed captions say so ("A grey pillar stands right of centre; objects pass
behind it and reappear."). The prompts here are the held-out scenes in which the primary, seen
first, is hidden by the pillar and seen again within the clip. Every score is read from pixels
(the named colour's largest blob per frame, as `sora-jax eval t2v` reads it):

  pillar      the video shows a pillar: a full-height band of grey columns
  hides       the object is hidden mid-clip: seen, then missing for a frame or more, then seen
              again, away from the frame's edges
  vanishes    the object is seen, then missing until the end, not at an edge and not asked to
              shrink (an object that went behind something and never came back)
  permanence  the world evaluator's pixel permanence (1 - the share of disappearances that
              are never undone without an excuse)

The same scores of the world's own clips of those scenes are the reference a model that renders
the world exactly would reach, and the videos scored against another prompt's caption are the
chance levels.
"""
from __future__ import annotations

import numpy as np

from sora_jax.eval import worlds as world_eval

KEYS = ("pillar", "hides", "vanishes", "permanence")
PILLAR_ROWS = 0.8     # a pillar column is grey in this share of its rows ...
PILLAR_COLUMNS = 2    # ... and at least this many adjacent columns are (a frame-height band)
EDGE = 0.08           # frame heights: an object this near an edge may leave the frame


def _grey(frames: np.ndarray) -> np.ndarray:
  """[T, H, W] the pillar's greys: unsaturated, mid-bright (the world's pillar shade 115-150,
  lit 0.9-1.1 from below; the evaluator's own grey test)."""
  f = frames.astype(np.float32)
  mean = f.mean(-1)
  return (np.ptp(f, axis=-1) < 30) & (mean > 95) & (mean < 185)


def shows_pillar(frames: np.ndarray) -> bool:
  """Whether most frames hold a band of >= PILLAR_COLUMNS adjacent columns that are grey from
  top to bottom (PILLAR_ROWS of their rows): the pillar, which no backdrop imitates."""
  cols = _grey(frames).mean(1) >= PILLAR_ROWS   # [T, W]
  width = cols.shape[1] - PILLAR_COLUMNS + 1
  band = cols[:, :width].copy()
  for k in range(1, PILLAR_COLUMNS):
    band &= cols[:, k:k + width]
  return bool(band.any(-1).mean() > 0.5)


def _away_from_edges(box: np.ndarray) -> bool:
  return bool(min(box[0], box[1], 1 - box[2], 1 - box[3]) >= EDGE)


def occlusion_scores(frames: np.ndarray, caption: str, fps: float = 8.0) -> dict[str, float]:
  """The module's scores of one uint8 video [T, H, W, 3] whose caption names the object."""
  desc = world_eval.parse_caption(caption)
  if desc["color"] is None or len(frames) < 3:
    return dict.fromkeys(KEYS, 0.0)
  det = world_eval.detect(frames, desc["color"])
  vis = det["visible"]
  seen = np.nonzero(vis)[0]
  hides = vanishes = False
  for t in range(len(vis) - 1):
    if not (vis[t] and not vis[t + 1]) or not _away_from_edges(det["bbox"][t]):
      continue
    if vis[t + 1:].any():
      hides = True
    elif desc["motion"] != "shrink":   # sliding behind the pillar shrinks it too: no excuse
      vanishes = True
  return {"pillar": float(shows_pillar(frames)), "hides": float(hides),
          "vanishes": float(vanishes and len(seen) > 0),
          "permanence": world_eval.score_video(frames, caption, fps)["permanence"]}


def held_out_occlusions(world: str, split: str, num: int, frames: int, height: int, width: int,
                        fps: float = 8.0, max_seeds: int = 20_000) -> list[dict]:
  """The first `num` scenes of `split` in `world` whose primary is seen, hidden by the pillar,
  and seen again within `frames` frames: {'seed', 'caption' (detailed), 'short', 'video'}."""
  from sora_jax.data import world as world_lib
  from sora_jax.data.world import rendering
  out = []
  for seed in range(max_seeds):
    scene = world_lib.sample_scene(seed, split, world)
    if scene.occluder is None:
      continue
    video, gt = rendering.render(scene, frames, height, width, fps)
    hidden = np.nonzero(gt["occluded"][:, 0])[0]
    vis = gt["visible"][:, 0]
    if len(hidden) and vis[:hidden[0]].any() and vis[hidden[-1] + 1:].any():
      out.append({"seed": seed, "caption": world_lib.caption(scene, "detailed", seed),
                  "short": world_lib.caption(scene, "short", seed), "video": video})
      if len(out) == num:
        return out
  raise ValueError(f"world {world!r} ({split}) has fewer than {num} scenes in which the pillar "
                   f"hides the primary object in {frames} frames (found {len(out)}); "
                   "occlusion needs world=standard or full (and their _free variants)")


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def evaluate(t2v, num_videos: int = 32, split: str = "test", seed: int = 0,
             world: str | None = None) -> dict:
  """Occlusion prompts (detailed captions) from `split` of `world` (default the run's): scores
  of the model's videos, of the world's own clips (reference) and against other prompts
  (chance), and the usual adherence of the same videos."""
  from sora_jax.eval import t2v_eval
  data = t2v.config.data
  world = str(world or data.world)
  frames, height, width = int(data.frames), int(data.height), int(data.width)
  fps = float(data.fps)
  scenes = held_out_occlusions(world, split, num_videos, frames, height, width, fps)
  captions = [s["caption"] for s in scenes]
  result = t2v_eval.evaluate(t2v, captions, seed=seed)
  videos = result.pop("videos")
  rows = [occlusion_scores(v, c, fps) for v, c in zip(videos, captions, strict=True)]
  chance = [occlusion_scores(v, c, fps)
            for v, c in zip(videos, captions[1:] + captions[:1], strict=True)]
  reference = [occlusion_scores(s["video"], c, fps) for s, c in zip(scenes, captions)]
  return {"world": world, "split": split, "num_videos": len(videos),
          "occlusion": mean_scores(rows), "reference": mean_scores(reference),
          "chance": mean_scores(chance), "adherence": result["adherence"],
          "adherence_chance": result["chance"], "seeds": [s["seed"] for s in scenes],
          "rows": rows, "videos": videos}


def evaluate_workdir(workdir: str, num_videos: int = 32, split: str = "test", seed: int = 0,
                     world: str | None = None, sample: dict | None = None) -> dict:
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(workdir, on_long="warn", sample=sample)
  result = evaluate(t2v, num_videos, split, seed, world)
  result.pop("videos")
  return result

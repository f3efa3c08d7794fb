"""Multi-shot videos: where the cut is, and whether the subject survives it.

The world's '..._shots' clips cut once between the wide view and a close-up of the primary
object, and their captions say in which order ("a red circle bounces to the right, then a
close-up of the red circle"; "a close-up of ..., then a wide shot"). Sora's multi-shot claim is
that a subject keeps its appearance across such cuts; here that is measured from pixels:

  cut         a cut is found (a jump in the subject's size or in the whole frame, not a motion)
  closeup     the shot the caption calls the close-up shows the subject larger (x1.5 in area
              scores 1) than the wide one
  color_kept  the subject, in its prompted colour, is present in both shots
  shape_kept  the subject's shape, classified in each shot, is the prompted one in both

Scoring the same videos against other prompts gives the chance levels, as `sora-jax eval t2v`
does; a video from a one-shot prompt shows how often the model cuts unasked (`cut` alone).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sora_jax.eval import worlds as world_eval

KEYS = ("cut", "closeup", "color_kept", "shape_kept")
FRAME_JUMP = 4.0    # a cut changes the frame this many times more than a typical step
SIZE_JUMP = 1.3     # ... or the subject's linear size by this factor in one step,
MIN_AREA = 0.006    # ... while it covers at least this share of the frame in both


def parse_shots(caption: str) -> list[str] | None:
  """['wide', 'close'] or ['close', 'wide'] for a two-shot caption, None for one shot."""
  c = caption.lower()
  close = c.find("close-up")
  if close < 0:
    return None
  wide = c.find("wide")
  return ["close", "wide"] if 0 <= close < wide or (wide < 0 and c.startswith(
      ("a close-up", "close-up", "the video opens on a close-up"))) else ["wide", "close"]


def _size_jumps(det: dict) -> np.ndarray:
  """How much the subject's scale changes between consecutive frames (0 where unknown): the
  smallest |log ratio| of its box's width, its box's height and the square root of its area.
  A zoom scales all three alike; a pillar hiding part of the subject, or a shape turning, moves
  one or two of them. The frame's edge can only hide part of it too, so a step counts only when
  the smaller of the two is whole (its box off the edges); a larger one cut off only makes the
  jump smaller."""
  box = det["bbox"].astype(np.float64)
  dims = np.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1], np.sqrt(det["area"])], -1)
  dims = np.maximum(dims, 1e-6)
  whole = (box[:, 0] > 0) & (box[:, 1] > 0) & (box[:, 2] < 1) & (box[:, 3] < 1)
  smaller_whole = np.where(dims[:-1, 2] <= dims[1:, 2], whole[:-1], whole[1:])
  # A few-pixel blob (an object slipping out from behind the pillar) changes shape too fast.
  big = np.minimum(det["area"][:-1], det["area"][1:]) >= MIN_AREA
  ok = det["visible"][:-1] & det["visible"][1:] & smaller_whole & big
  return np.where(ok, np.abs(np.log(dims[1:] / dims[:-1])).min(-1), 0.0)


def find_cut(frames: np.ndarray, det: dict) -> tuple[int, float]:
  """(first frame of the second shot, strength >= 1 when it is a cut). A cut is the step where
  the whole frame changes most, relative to a typical step, or the subject's size jumps."""
  f = frames.astype(np.float32)
  # The backdrop's change, the subject masked out: still between two frames of one shot
  # however the subject moves, shifted everywhere by a cut.
  subject = ndimage.binary_dilation(det["mask"], structure=np.ones((1, 5, 5), bool))
  keep = ~(subject[1:] | subject[:-1])
  diff = np.abs(np.diff(f, axis=0)).mean(-1)
  d = (diff * keep).sum((1, 2)) / np.maximum(keep.sum((1, 2)), 1)   # [T - 1]
  frame_jump = d / (np.median(d) + 0.5) / FRAME_JUMP
  strength = np.maximum(frame_jump, _size_jumps(det) / math.log(SIZE_JUMP))
  t = int(np.argmax(strength))
  return t + 1, float(strength[t])


def _shot_subject(det: dict, frames: slice, shape: str | None) -> tuple[float, float, float]:
  """(share of the shot's frames showing the subject, whether its majority shape is `shape`,
  its median area)."""
  vis = det["visible"][frames]
  idx = np.nonzero(vis)[0] + (frames.start or 0)
  if not len(idx):
    return 0.0, 0.0, 0.0
  shapes = [world_eval.classify_shape(det["mask"][t]) for t in idx]
  major = max(set(shapes), key=shapes.count)
  return float(vis.mean()), float(major == shape), float(np.median(det["area"][idx]))


def score_shots(frames: np.ndarray, caption: str) -> dict[str, float]:
  """Scores of one uint8 video [T, H, W, 3] against a two-shot caption (see the module doc)."""
  order = parse_shots(caption)
  if order is None:
    raise ValueError(f"score_shots needs a two-shot caption (naming a close-up); got {caption!r}")
  desc = world_eval.parse_caption(caption)
  if desc["color"] is None or len(frames) < 3:
    return dict.fromkeys(KEYS, 0.0)
  det = world_eval.detect(frames, desc["color"])
  cut, strength = find_cut(frames, det)
  shots = [slice(0, cut), slice(cut, len(frames))]
  seen, shape_ok, area = zip(*(_shot_subject(det, s, desc["shape"]) for s in shots))
  close, wide = (area[0], area[1]) if order[0] == "close" else (area[1], area[0])
  ratio = close / wide if wide > 0 else (math.inf if close > 0 else 0.0)
  return {"cut": float(strength >= 1.0),
          "closeup": float(np.clip(math.log(max(ratio, 1e-9)) / math.log(1.5), 0, 1)),
          "color_kept": float(min(min(seen) / 0.5, 1.0)),
          "shape_kept": float(np.mean(shape_ok)),
          "cut_frame": float(cut)}


def cuts_unasked(videos, captions) -> float:
  """Share of videos from one-shot captions in which a cut is found (the false-cut rate)."""
  hits = []
  for v, c in zip(videos, captions, strict=True):
    color = world_eval.parse_caption(c)["color"]
    if color is not None and len(v) >= 3:
      hits.append(find_cut(v, world_eval.detect(v, color))[1] >= 1.0)
  return float(np.mean(hits)) if hits else float("nan")


def mean_shot_scores(rows: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def held_out_captions(world: str, split: str, num: int, *, two_shot: bool) -> list[str]:
  """The first `num` short captions of `split` in `world`'s '_shots' variant whose scenes have
  two shots (or one): prompts for any model, trained on shots or not."""
  from sora_jax.data import world as world_lib
  base = world if world.endswith("_shots") else f"{world}_shots"
  out, seed = [], 0
  while len(out) < num:
    scene = world_lib.sample_scene(seed, split, base)
    if (scene.shots is not None) == two_shot:
      out.append(world_lib.caption(scene, "short", seed))
    seed += 1
  return out


def evaluate(t2v, num_videos: int = 16, split: str = "test", seed: int = 0) -> dict:
  """Multi-shot prompts from `split`: shot scores against chance (the same videos under other
  two-shot prompts), how often one-shot prompts get a cut anyway, and the usual adherence of
  both (on two-shot videos the cut itself counts against direction and plausibility)."""
  from sora_jax.eval import t2v_eval
  world = str(t2v.config.data.world)
  two = held_out_captions(world, split, num_videos, two_shot=True)
  one = held_out_captions(world, split, num_videos, two_shot=False)
  r2 = t2v_eval.evaluate(t2v, two, seed=seed)
  r1 = t2v_eval.evaluate(t2v, one, seed=seed + 100_003)
  videos = r2.pop("videos")
  rows = [score_shots(v, c) for v, c in zip(videos, two, strict=True)]
  chance = [score_shots(v, c) for v, c in zip(videos, two[1:] + two[:1], strict=True)]
  return {"world": world, "split": split, "num_videos": num_videos,
          "shots": mean_shot_scores(rows), "chance": mean_shot_scores(chance),
          "cuts_unasked": cuts_unasked(r1.pop("videos"), one),
          "adherence_two_shot": r2["adherence"], "adherence_one_shot": r1["adherence"],
          "captions": two, "rows": rows, "videos": videos}


def evaluate_workdir(workdir: str, num_videos: int = 16, split: str = "test", seed: int = 0
                     ) -> dict:
  from sora_jax.pipeline import TextToVideo
  result = evaluate(TextToVideo.from_workdir(workdir, on_long="warn"), num_videos, split, seed)
  result.pop("videos")
  return result

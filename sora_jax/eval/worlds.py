"""Scores videos against world captions/scenes from pixels: colour, shape, direction,
object permanence and physical plausibility of the primary object.

Built for model samples: 32-64 px, 5-17 frames, blurry or noisy. Everything works on the
largest connected blob of the named colour per frame (nearest-palette segmentation, with greys
and black as rejecting classes so backgrounds, the pillar and blurred edges never count).
Thresholds are in frame heights and frames, so they hold at any resolution; the defaults assume
the world's 8 fps. A one-frame video (a still) has no motion to contradict: direction,
permanence and plausibility are then 1 when the object is there and 0 when it is not.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from sora_jax.data.world import rendering
from sora_jax.data.world.captions import SHAPE_WORDS
from sora_jax.data.world.vocab import COLORS, SHAPES, Scene

KEYS = ("color", "shape", "direction", "permanence", "plausibility")
# Rejecting classes: a pixel nearer one of these than to the named colour is not that colour.
_REJECT = np.array([(0, 0, 0), (45, 45, 45), (90, 90, 90), (135, 135, 135), (180, 180, 180)],
                   np.float32)
_PALETTE = np.array(list(COLORS.values()), np.float32)
COLOR_TOLERANCE = 120.0  # RGB distance; blurred blob cores stay well inside it
_COLOR_SYNONYMS = {"pink": "magenta", "purple": "magenta", "violet": "magenta",
                   "aqua": "cyan", "turquoise": "cyan", "gold": "yellow"}
_MOTION_PATTERNS = (  # first match wins: "falls and bounces" is a fall, not a bounce
    ("fall", r"\b(falls?|falling|fell|drops?|dropping|dropped)\b"),
    ("orbit", r"\b(orbit\w*|revolv\w*|circling)\b"),
    ("rotate", r"\b(spin\w*|rotat\w*|turns?|turning)\b"),
    ("grow", r"\b(grow\w*|expand\w*|bigger|larger|swell\w*)\b"),
    ("shrink", r"\b(shrink\w*|shrank|smaller|contract\w*)\b"),
    ("cross", r"\b(slid\w*|glid\w*|across|drift\w*)\b"),
    ("bounce", r"\b(bounc\w*|moves?|moving)\b"),
)
_DIRECTION_PATTERNS = (
    ("counterclockwise", r"\b(counter-?clockwise|anti-?clockwise)\b"),
    ("clockwise", r"\bclockwise\b"),
    ("right", r"\b(right|rightwards?)\b"),
    ("left", r"\b(left|leftwards?)\b"),
    ("up", r"\b(up|upwards?)\b"),
    ("down", r"\b(down|downwards?)\b"),
)
_DIRS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
TELEPORT = 0.3  # frame heights per frame: faster than anything in the world at 8 fps
JOLT = 0.35  # frame heights per frame^2: a floor bounce at 8 fps stays under it


def parse_caption(caption: str) -> dict[str, str | None]:
  """Colour, shape, motion and direction of the primary object (the first sentence's subject)."""
  first = re.split(r"(?<=[.!?;])\s", caption.strip().lower(), maxsplit=1)[0]
  words = {c: c for c in COLORS} | _COLOR_SYNONYMS
  m = re.search(r"\b(" + "|".join(words) + r")\b", first)
  color = words[m.group(1)] if m else None
  tail = first[m.end():] if m else first
  shape_of = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
  m2 = re.search(r"\b(" + "|".join(shape_of) + r")s?\b", tail)
  shape = shape_of[m2.group(1)] if m2 else None
  rest = tail[m2.end():] if m2 else tail
  motion = next((name for name, pat in _MOTION_PATTERNS if re.search(pat, rest)), None)
  direction = next((name for name, pat in _DIRECTION_PATTERNS if re.search(pat, rest)), None)
  if motion == "fall":
    direction = "down"
  elif motion in ("grow", "shrink"):
    direction = None
  return {"color": color, "shape": shape, "motion": motion, "direction": direction}


def _color_mask(frames: np.ndarray, color: str) -> np.ndarray:
  if color not in COLORS:
    raise ValueError(f"colour {color!r} is not a world colour; use one of {list(COLORS)}")
  f = frames.astype(np.float32)
  target = np.asarray(COLORS[color], np.float32)
  others = np.concatenate([_PALETTE[[c != color for c in COLORS]], _REJECT])
  d = np.sum((f - target) ** 2, -1)
  nearest_other = np.min(np.sum((f[..., None, :] - others) ** 2, -1), -1)
  return (d < nearest_other) & (d < COLOR_TOLERANCE ** 2)


def detect(frames: np.ndarray, color: str) -> dict[str, np.ndarray]:
  """Per-frame largest blob of `color` in uint8 frames [T, H, W, 3] (or one [H, W, 3] image).

  Returns centroid [T, 2] (x, y as fractions of width and height; NaN where absent), area [T]
  (fraction of the frame), visible [T], bbox [T, 4] (x0, y0, x1, y1 fractions), coherence [T]
  (share of the colour's pixels in that blob) and mask [T, H, W] (the blob).
  """
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  T, H, W = frames.shape[:3]
  cmask = _color_mask(frames, color)
  min_px = max(3, int(0.0015 * H * W))
  out = {"centroid": np.full((T, 2), np.nan, np.float32), "area": np.zeros(T, np.float32),
         "visible": np.zeros(T, bool), "bbox": np.zeros((T, 4), np.float32),
         "coherence": np.zeros(T, np.float32), "mask": np.zeros((T, H, W), bool)}
  for t in range(T):
    labels, n = ndimage.label(cmask[t], structure=np.ones((3, 3)))
    if n == 0:
      continue
    counts = np.bincount(labels.ravel())[1:]
    k = int(np.argmax(counts)) + 1
    blob = labels == k
    rows, cols = np.nonzero(blob)
    out["mask"][t] = blob
    out["area"][t] = counts[k - 1] / (H * W)
    out["coherence"][t] = counts[k - 1] / counts.sum()
    out["centroid"][t] = ((cols.mean() + 0.5) / W, (rows.mean() + 0.5) / H)
    out["bbox"][t] = (cols.min() / W, rows.min() / H, (cols.max() + 1) / W, (rows.max() + 1) / H)
    out["visible"][t] = counts[k - 1] >= min_px and out["coherence"][t] >= 0.5
  return out


# ----------------------------------------------------------------------------- shape
def _hull_area(mask: np.ndarray) -> float:
  """Area of the convex hull of the mask's pixel squares (monotone chain on row extremes)."""
  rows = np.nonzero(mask.any(1))[0]
  pts = set()
  for r in rows:
    c = np.nonzero(mask[r])[0]
    pts.update({(c[0], r), (c[0], r + 1), (c[-1] + 1, r), (c[-1] + 1, r + 1)})
  p = sorted(pts)
  if len(p) < 3:
    return float(mask.sum())

  def half(points):
    h = []
    for q in points:
      while len(h) >= 2 and ((h[-1][0] - h[-2][0]) * (q[1] - h[-2][1]) -
                             (h[-1][1] - h[-2][1]) * (q[0] - h[-2][0])) <= 0:
        h.pop()
      h.append(q)
    return h
  hull = np.array(half(p)[:-1] + half(p[::-1])[:-1], np.float64)
  x, y = hull[:, 0], hull[:, 1]
  return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def _features(mask: np.ndarray) -> np.ndarray:
  """Rotation-invariant blob shape: solidity, spread (disc = 1) and reach (disc ~ 1)."""
  rows, cols = np.nonzero(mask)
  a = float(len(rows))
  r2 = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2
  spread = 2 * math.pi * float(r2.mean()) / a
  reach = (math.sqrt(float(r2.max())) + 0.5) / math.sqrt(a / math.pi)
  return np.array([a / _hull_area(mask), spread, reach])


@functools.lru_cache(maxsize=64)
def _references(bucket: int) -> tuple[np.ndarray, np.ndarray]:
  """Features of each world shape rendered at the blob's pixel area, several angles/offsets."""
  area = 1.15 ** bucket
  rng = np.random.default_rng(bucket)
  feats, labels = [], []
  for si, shape in enumerate(SHAPES):
    size = math.sqrt(area / rendering.unit_area(shape))  # pixels
    n = int(2 * size * 1.5) + 4
    grid = np.arange(n) + 0.5 - n / 2
    for k in range(8):
      ox, oy = rng.uniform(-0.5, 0.5, 2)
      alpha = rendering.coverage(shape, (grid - ox)[None, :], (grid - oy)[:, None], size,
                                    k * math.pi / 12 + rng.uniform(0, 0.2), 1.0)
      if (alpha >= 0.5).sum() >= 3:
        feats.append(_features(alpha >= 0.5))
        labels.append(si)
  return np.array(feats), np.array(labels)


def classify_shape(mask: np.ndarray) -> str:
  """Nearest world shape (1-NN over references rendered at the same pixel area)."""
  area = max(3, int(mask.sum()))
  feats, labels = _references(int(round(math.log(area) / math.log(1.15))))
  scale = feats.std(0) + 1e-3
  d = np.sum(((feats - _features(mask)) / scale) ** 2, -1)
  return SHAPES[labels[int(np.argmin(d))]]


# ----------------------------------------------------------------------------- scores
def _track(det: dict, aspect: float) -> tuple[np.ndarray, np.ndarray]:
  """Visible frame indices and centroids in frame heights (x scaled by the aspect)."""
  idx = np.nonzero(det["visible"])[0]
  return idx, det["centroid"][idx] * np.array([aspect, 1.0], np.float32)


def _direction_score(det: dict, motion: str | None, direction: str | None, shape: str | None,
                     aspect: float) -> float:
  idx, p = _track(det, aspect)
  if len(det["visible"]) == 1:
    return float(len(idx) == 1)
  if motion is None or len(idx) < 2:
    return float(motion is None)
  if motion in ("grow", "shrink"):
    area = det["area"][idx]
    lr = math.log(max(area[-2:].mean(), 1e-9) / max(area[:2].mean(), 1e-9))
    return float(np.clip((lr if motion == "grow" else -lr) / math.log(1.5), 0, 1))
  if motion == "orbit":
    if len(idx) < 3:
      return 0.0
    v = p - p.mean(0)
    cross = v[:-1, 0] * v[1:, 1] - v[:-1, 1] * v[1:, 0]  # > 0: clockwise on screen (y down)
    swept = float(np.sum(np.arctan2(cross, np.sum(v[:-1] * v[1:], -1))))
    sign = -1.0 if direction == "counterclockwise" else 1.0
    return float(np.clip((sign * swept if direction else abs(swept)) / math.radians(60), 0, 1))
  if motion == "rotate":
    n = {"square": 4, "triangle": 3, "star": 5}.get(shape or "", 4)
    phases = []
    for t in idx:
      rows, cols = np.nonzero(det["mask"][t])
      z = (cols - cols.mean()) + 1j * (rows - rows.mean())
      c = np.sum(z ** n)
      if abs(c) > 0.02 * np.sum(np.abs(z) ** n):
        phases.append(np.angle(c) / n)
    if len(phases) < 2:
      return 0.0
    period = 2 * math.pi / n
    d = np.mod(np.diff(phases) + period / 2, period) - period / 2  # > 0: clockwise
    sign = -1.0 if direction == "counterclockwise" else 1.0
    total = float(np.sum(d))
    return float(np.clip((sign * total if direction else abs(total)) / math.radians(20), 0, 1))
  # Straight-line motions: the first ~quarter frame height of travel, before any wall.
  steps = np.diff(p, axis=0)
  path = np.cumsum(np.linalg.norm(steps, axis=-1))
  stop = int(np.searchsorted(path, 0.25)) + 1
  net = steps[:stop].sum(0)
  if np.linalg.norm(net) < 0.04:
    return 0.0
  if direction not in _DIRS:
    return 1.0
  cos = float(np.dot(net, _DIRS[direction]) / np.linalg.norm(net))
  return float(np.clip((cos - 0.5) / 0.4, 0, 1))


def _grey_near(frame: np.ndarray, bbox: np.ndarray) -> bool:
  """Whether pillar-grey pixels surround a bbox (x0, y0, x1, y1 fractions), padded by 50%."""
  H, W = frame.shape[:2]
  x0, y0, x1, y1 = bbox
  px, py = 0.5 * (x1 - x0) + 2 / W, 0.5 * (y1 - y0) + 2 / H
  r0, r1 = int(max(0, y0 - py) * H), int(math.ceil(min(1, y1 + py) * H))
  c0, c1 = int(max(0, x0 - px) * W), int(math.ceil(min(1, x1 + px) * W))
  patch = frame[r0:r1, c0:c1].astype(np.float32)
  grey = (np.ptp(patch, -1) < 30) & (patch.mean(-1) > 95) & (patch.mean(-1) < 185)
  return bool(grey.mean() > 0.15) if grey.size else False


def _permanence_score(frames: np.ndarray, det: dict, gt_visible: np.ndarray | None) -> float:
  vis = det["visible"]
  if not vis.any():
    return 0.0
  if len(vis) == 1:
    return 1.0
  if gt_visible is not None and len(gt_visible) == len(vis):
    seen = np.nonzero(gt_visible)[0]
    hidden = np.nonzero(~gt_visible[seen[0]:])[0] + seen[0] if len(seen) else []
    if len(hidden) and gt_visible[hidden[0]:].any():
      back = np.nonzero(gt_visible)[0]
      back = back[back > hidden[0]]
      return float(vis[back].mean())  # it should be there again whenever the GT shows it
  # From pixels: every disappearance must end in a reappearance, unless the object left
  # through a frame edge, went behind grey, or shrank away.
  bad = events = 0
  for t in range(len(vis) - 1):
    if vis[t] and not vis[t + 1]:
      events += 1
      if vis[t + 1:].any():
        continue
      x0, y0, x1, y1 = det["bbox"][t]
      at_edge = min(x0, y0, 1 - x1, 1 - y1) < 0.08
      shrunk = det["area"][t] < 0.4 * det["area"][vis].max()
      if not (at_edge or shrunk or _grey_near(frames[t], det["bbox"][t])):
        bad += 1
  return 1.0 - bad / max(events, 1)


def _plausibility_score(det: dict, aspect: float) -> float:
  vis = det["visible"]
  if not vis.any():
    return 0.0
  idx, p = _track(det, aspect)
  if len(idx) < 2:
    return 1.0 if len(vis) == 1 else 0.5
  gaps = np.diff(idx).astype(np.float32)
  v = np.diff(p, axis=0) / gaps[:, None]
  teleports = np.mean(np.linalg.norm(v, axis=-1) > TELEPORT)
  adjacent = (gaps[:-1] == 1) & (gaps[1:] == 1)
  jolts = (np.mean(np.linalg.norm(np.diff(v, axis=0), axis=-1)[adjacent] > JOLT)
           if adjacent.any() else 0.0)
  toggles = int(np.sum(vis[1:] != vis[:-1]))
  return float(np.clip(1 - teleports - 0.5 * jolts - 0.1 * max(0, toggles - 3), 0, 1))


def _spec(spec: str | Scene | dict, frames: np.ndarray, fps: float
          ) -> tuple[dict[str, str | None], np.ndarray | None]:
  """(parsed primary description, GT visibility of the primary or None)."""
  T, H, W = frames.shape[:3]
  if isinstance(spec, dict) and "objects" in spec:
    spec = Scene.from_dict(spec)
  elif isinstance(spec, dict) and "scene_json" in spec:
    scene = Scene.from_json(spec["scene_json"])
    vis = np.asarray(spec.get("visible", np.zeros((0,))))
    if vis.ndim == 2 and vis.shape[0] == T:
      o = scene.objects[0]
      return {"color": o.color, "shape": o.shape, "motion": o.motion,
              "direction": o.direction}, vis[:, 0].astype(bool)
    spec = scene
  if isinstance(spec, Scene):
    o = spec.objects[0]
    _, gt = rendering.render(spec, T, H, W, fps)
    return ({"color": o.color, "shape": o.shape, "motion": o.motion, "direction": o.direction},
            gt["visible"][:, 0])
  if isinstance(spec, dict) and "caption" in spec:
    spec = spec["caption"]
  if isinstance(spec, bytes):
    spec = spec.decode()
  if isinstance(spec, str):
    return parse_caption(spec), None
  if isinstance(spec, dict) and {"color", "shape"} <= set(spec):
    return {k: spec.get(k) for k in ("color", "shape", "motion", "direction")}, None
  raise TypeError(f"score_video spec must be a caption, a Scene, a scene dict or a "
                  f"generate_clip example; got {type(spec).__name__}: {str(spec)[:80]}")


def score_video(frames: np.ndarray, spec: str | Scene | dict, fps: float = 8.0
                ) -> dict[str, float]:
  """Scores one uint8 video [T, H, W, 3] against a caption, a Scene (or its dict / a
  generate_clip example). Each score is in [0, 1]; 'overall' is their mean."""
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.dtype != np.uint8:
    raise ValueError(f"score_video expects uint8 frames [T, H, W, 3], got {frames.dtype}; "
                     "map model output from [-1, 1] with ((x + 1) * 127.5).round().clip(0, 255)")
  desc, gt_visible = _spec(spec, frames, fps)
  aspect = frames.shape[2] / frames.shape[1]
  if desc["color"] is None:
    scores = dict.fromkeys(KEYS, 0.0)
    scores["framing"] = float("nan")
  else:
    det = detect(frames, desc["color"])
    T = len(frames)
    scores = {"color": float(min(1.0, det["visible"].sum() / max(1.0, 0.5 * T)))}
    usable = [t for t in np.nonzero(det["visible"])[0]
              if min(det["bbox"][t][0], det["bbox"][t][1], 1 - det["bbox"][t][2],
                     1 - det["bbox"][t][3]) > 0]
    # Framing (Sora's composition claim; not part of 'overall'): the share of the frames that
    # show the object in which all of it is in frame, its box touching no edge.
    # NaN without any such frame: a video with no object says nothing about framing (and
    # score_videos averages framing over the videos that show one).
    scores["framing"] = (float(len(usable) / det["visible"].sum()) if det["visible"].any()
                         else float("nan"))
    if usable:
      big = np.max(det["area"][usable])
      usable = [t for t in usable if det["area"][t] >= 0.5 * big] if desc["motion"] not in (
          "grow", "shrink") else usable
    hits = [classify_shape(det["mask"][t]) == desc["shape"] for t in usable]
    scores["shape"] = float(np.mean(hits)) if hits else 0.0
    scores["direction"] = _direction_score(det, desc["motion"], desc["direction"],
                                           desc["shape"], aspect)
    scores["permanence"] = _permanence_score(frames, det, gt_visible)
    scores["plausibility"] = _plausibility_score(det, aspect)
  scores["overall"] = float(np.mean([scores[k] for k in KEYS]))
  return scores


def score_videos(videos: Iterable[np.ndarray], specs: Iterable[Any], fps: float = 8.0
                 ) -> dict[str, float]:
  """Mean of score_video over pairs of videos and specs."""
  return mean_scores([score_video(v, s, fps) for v, s in zip(videos, specs, strict=True)])


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
  """score_videos' means of score_video rows (framing over the videos that show the object)."""
  if not rows:
    raise ValueError("score_videos got no videos")
  out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "framing"}
  framed = [r["framing"] for r in rows if not np.isnan(r["framing"])]
  out["framing"] = float(np.mean(framed)) if framed else 0.0   # over videos showing the object
  return out

"""`sora-jax eval t2v`: does a text-to-video model follow its prompts?

Prompts are the captions of held-out procedural clips; the world evaluator recovers objects from
the generated pixels and scores colour, shape, motion direction, permanence and plausibility.
The same videos scored against other clips' captions (a derangement) give the chance level, so
"far above chance" is a measured gap, not an impression.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from sora_jax.data import pipeline
from sora_jax.eval import worlds as world_eval
from sora_jax.systems.vae import to_uint8


def held_out_captions(data_cfg, split: str, num: int) -> list[str]:
  return [str(b["caption"][0]) for b in _held_out(data_cfg, split, num)]


def data_of_world(data_cfg, world: str | None):
  """`data_cfg` with its world replaced (a copy), or as it is when `world` is empty: prompts
  from another world than the run's, e.g. a '_shots' run scored on one-shot prompts."""
  if not world:
    return data_cfg
  data_cfg = data_cfg.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.world = world
  return data_cfg


def _held_out(data_cfg, split: str, num: int):
  """The first `num` clips of `split` in order, one per batch, with their short captions."""
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.caption = "short"
    cfg.batch_size = 1
  it = pipeline.make_iterator(cfg, split, seed=0, shuffle=False, num_epochs=1,
                              process_index=0, process_count=1, drop_remainder=False)
  return itertools.islice(it, num)   # stops before rendering clip num + 1


def caption_losses(t2v, split: str, num: int, clips: list | None = None) -> dict[str, float]:
  """Held-out flow loss of `num` clips of `split` under their true captions, the null caption
  and (procedural world) each swapped attribute: which words the model reads, no sampling.
  `clips`: those clips already rendered (`_held_out`), if the caller has them."""
  from sora_jax.eval import counterfactual
  clips = list(_held_out(t2v.config.data, split, num)) if clips is None else clips
  latents = np.stack([t2v.encode(b["video"][0]) for b in clips])
  return counterfactual.evaluate(t2v.system, t2v.params, latents,
                                 [str(b["caption"][0]) for b in clips],
                                 world=t2v.config.data.name == "shapes_world")


def evaluate(t2v, captions: list[str], *, seed: int = 0, batch_size: int = 8,
             num_steps: int | None = None, guidance_scale: float | None = None,
             size: dict | None = None) -> dict:
  """Adherence of `t2v`'s videos for `captions` against chance; `size` holds TextToVideo's size
  keywords (num_frames / height / width / aspect / seconds): any size, not only the trained
  one (a one-frame size scores text-to-image: colour and shape)."""
  videos = []
  for i in range(0, len(captions), batch_size):
    chunk = captions[i:i + batch_size]
    # A full batch every call keeps one compiled sampler; the padding is dropped.
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    out = t2v(padded, num_steps=num_steps, guidance_scale=guidance_scale, seed=seed + i,
              **(size or {}))
    videos.extend(list(out[:len(chunk)]))
  fps = float(t2v.config.data.fps)
  rows = [world_eval.score_video(v, c, fps) for v, c in zip(videos, captions)]
  # Chance: each video against another clip's caption (a fixed derangement).
  shifted = captions[1:] + captions[:1]
  chance = world_eval.score_videos(videos, shifted, fps=fps)
  return {"num_videos": len(videos), "adherence": world_eval.mean_scores(rows),
          "chance": chance, "direction_by_motion": direction_by_motion(rows, captions),
          "shape_by_shape": score_by_word(rows, captions, "shape", "shape"),
          "size": list(videos[0].shape[:3]) if videos else None, "videos": videos}


def direction_by_motion(rows: list[dict], captions: list[str]) -> dict[str, list]:
  """{motion: [mean direction score, videos]}: a verb (falls, grows) fixes its direction, the
  words left / right / up / down / clockwise do not, and the mean hides which one a model reads."""
  return score_by_word(rows, captions, "motion", "direction")


def score_by_word(rows: list[dict], captions: list[str], word: str, score: str
                  ) -> dict[str, list]:
  """{the captions' `word` (parse_caption's motion, shape, colour): [mean `score`, videos]}:
  e.g. shape by shape, where a circle's blur still reads as a circle and a star's does not."""
  groups: dict[str, list[float]] = {}
  for r, c in zip(rows, captions, strict=True):
    groups.setdefault(str(world_eval.parse_caption(c)[word]), []).append(r[score])
  return {m: [float(np.mean(v)), len(v)] for m, v in sorted(groups.items())}


def evaluate_workdir(workdir: str, split: str = "test", num_videos: int = 32,
                     seed: int = 0, size: dict | None = None,
                     fvd_weights: str | None = None, world: str | None = None,
                     sample: dict | None = None) -> dict:
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(workdir, on_long="warn", sample=sample)   # captions as cut
  return evaluate_model(t2v, split, num_videos, seed=seed, size=size, fvd_weights=fvd_weights,
                        world=world)


def evaluate_model(t2v, split: str = "test", num_videos: int = 32, *, seed: int = 0,
                   size: dict | None = None, fvd_weights: str | None = None,
                   world: str | None = None) -> dict:
  """Adherence with chance on `num_videos` held-out captions of `split` (of `world`, default the
  run's); at the trained size also the held-out caption losses and, given a local I3D
  checkpoint (`fvd_weights`, models/i3d.py), FVD of the videos against the held-out clips whose
  captions prompted them."""
  trained_size = not any((size or {}).values())
  net = None
  if fvd_weights:   # bad input fails here, before any sampling
    if not trained_size:
      raise ValueError("--fvd_weights compares against the held-out clips, which have the "
                       "trained size; drop --frames/--height/--width/--aspect/--seconds")
    from sora_jax.models import i3d
    net = i3d.load_i3d(fvd_weights)
  data = data_of_world(t2v.config.data, world)
  clips = list(_held_out(data, split, num_videos))   # rendered once, used thrice
  result = evaluate(t2v, [str(b["caption"][0]) for b in clips], seed=seed, size=size)
  videos = result.pop("videos")
  result["split"], result["world"] = split, str(data.world)
  if trained_size:   # the held-out clips' losses too
    result["caption_losses"] = caption_losses(t2v, split, num_videos, clips)
  if net is not None:
    from sora_jax.eval import fvd
    result["fvd"] = fvd.fvd(net, np.stack([b["video"][0] for b in clips]), np.stack(videos))
  return result


def mean_gap(result: dict, keys=("color", "direction")) -> float:
  return float(np.mean([result["adherence"][k] - result["chance"][k] for k in keys]))


# ---------------------------------------------------------------------------- long-video drift

DRIFT_KEYS = ("color", "shape", "direction", "plausibility")


def window_seams(total_latent: int, window: int, overlap: int, tc: int) -> list[int]:
  """Pixel frames where `TextToVideo.long_video` starts a new window's generated frames."""
  seams, end = [], window
  while end < total_latent:
    seams.append(1 + tc * (end - 1))
    end += window - overlap
  return seams


def drift_report(video: np.ndarray, caption: str, fps: float, window_s: float = 2.0,
                 seams: list[int] | None = None) -> dict:
  """Per ~2 s window: the world evaluator's colour / shape / direction / plausibility against the
  caption (is the prompted object still there, still itself, still moving as asked?); each
  window's score over the first window's; how far the background's colour has moved from the
  first window's (mean |RGB| / 255 of the per-frame median colour, which a small object does not
  move: a slow fade no adherence score reads); and, at generation seams, the frame-to-frame change
  against the change inside windows (a seam that jumps shows up as flicker)."""
  n = max(2, int(round(window_s * fps)))
  backdrop = np.median(np.asarray(video, np.float32).reshape(len(video), -1, 3), axis=1)
  windows = []
  for a in range(0, len(video) - n + 1, n):
    s = world_eval.score_video(video[a:a + n], caption, fps)
    shift = np.abs(backdrop[a:a + n].mean(0) - backdrop[:n].mean(0)).mean() / 255.0
    windows.append({"start_s": a / fps, **{k: float(s[k]) for k in DRIFT_KEYS},
                    "background_shift": float(shift)})
  first = windows[0]
  ratio = {k: [w[k] / first[k] if first[k] > 0 else None for w in windows] for k in DRIFT_KEYS}
  diff = np.abs(np.diff(np.asarray(video, np.float32), axis=0)).mean((1, 2, 3)) / 255.0
  seam_set = {s - 1 for s in (seams or []) if 0 < s < len(video)}   # diff index before frame s
  inside = [d for i, d in enumerate(diff) if i not in seam_set]
  return {"windows": windows, "ratio_to_first": ratio,
          "seam_change": float(np.mean([diff[i] for i in seam_set])) if seam_set else None,
          "inside_change": float(np.mean(inside)) if inside else None}


def drift_summary(scores: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> dict:
  """Drift of one score from per-video, per-window values [videos, windows]: the window means,
  each over the first window's; every later window pooled over the first (a drop after the first
  window); and the least-squares line through the window means, its end over its start (a slow
  slide). Both ratios carry a 95 % bootstrap interval over videos, so one lucky first window does
  not read as drift. `held`: drift beyond 10 % is excluded, i.e. both lower bounds >= 0.9."""
  scores = np.asarray(scores, np.float64)
  v, w = scores.shape
  x = np.arange(w, dtype=np.float64)

  def ratios(s):
    mean = s.mean(0)
    later = mean[1:].mean() / mean[0] if mean[0] > 0 and w > 1 else np.nan
    slope, icpt = np.polyfit(x, mean, 1) if w > 1 else (0.0, mean[0])
    trend = (icpt + slope * (w - 1)) / icpt if icpt > 0 else np.nan
    return later, trend

  later, trend = ratios(scores)
  rng = np.random.default_rng(seed)
  boot = np.array([ratios(scores[rng.integers(0, v, v)]) for _ in range(resamples)])
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)              # all-NaN: every start was 0
    lo, hi = np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)
  mean = scores.mean(0)
  se = scores.std(0, ddof=1) / np.sqrt(v) if v > 1 else np.zeros(w)
  num = lambda x: float(x) if np.isfinite(x) else None  # noqa: E731  (undefined: a zero start)
  return {"window_mean": mean.tolist(), "window_se": se.tolist(),
          "ratio_to_first": (mean / mean[0]).tolist() if mean[0] > 0 else None,
          "later_over_first": num(later), "later_over_first_ci95": [num(lo[0]), num(hi[0])],
          "trend_end_over_start": num(trend), "trend_ci95": [num(lo[1]), num(hi[1])],
          "held": bool(lo[0] >= 0.9 and lo[1] >= 0.9)}


def evaluate_long(t2v, captions: list[str], *, seconds: float, window: int | None = None,
                  overlap: int = 1, seed: int = 0, window_s: float = 2.0,
                  batch: int = 8, num_steps: int | None = None,
                  guidance_scale: float | None = None,
                  extend_guidance: float | None = None) -> dict:
  """Long videos for `captions` (`batch` prompts per sampler call) and their drift reports:
  per-window scores averaged over the videos, whether every window's colour and shape mean stays
  within 10 % of the first's, and `drift_summary` per score with intervals over videos."""
  fps = float(t2v.config.data.fps)
  tc = int(t2v.config.vae.temporal_compression)
  win = int(window or t2v.system.latent_shape[0])
  reports, videos = [], []
  for b in range(0, len(captions), batch):
    chunk = captions[b:b + batch]
    for caption, video in zip(chunk, t2v.long_videos(chunk, seconds=seconds, window=win,
                                                     overlap=overlap, num_steps=num_steps,
                                                     guidance_scale=guidance_scale,
                                                     extend_guidance=extend_guidance,
                                                     seed=seed + b)):
      total = 1 + (len(video) - 1) // tc
      reports.append(drift_report(video, caption, fps, window_s,
                                  window_seams(total, win, overlap, tc)))
      videos.append(video)
  n_win = min(len(r["windows"]) for r in reports)
  per_video = {k: np.array([[r["windows"][w][k] for w in range(n_win)] for r in reports])
               for k in DRIFT_KEYS}
  mean = [{k: float(per_video[k][:, w].mean()) for k in DRIFT_KEYS} for w in range(n_win)]
  for w, m in enumerate(mean):
    m["start_s"] = reports[0]["windows"][w]["start_s"]
  strict = {k: bool(all(m[k] >= 0.9 * mean[0][k] for m in mean)) for k in ("color", "shape")}
  seam = [r["seam_change"] for r in reports if r["seam_change"] is not None]
  backdrop = np.array([[r["windows"][w]["background_shift"] for w in range(n_win)]
                       for r in reports])
  return {"num_videos": len(captions), "seconds": seconds, "frames": int(len(videos[0])),
          "window_latent_frames": win, "overlap": overlap, "windows": mean,
          "guidance_scale": t2v.sizes(guidance_scale=guidance_scale)[2],
          "extend_guidance": t2v.resolve_extend_guidance(extend_guidance, guidance_scale),
          "within_10pct_of_first": strict,
          "drift": {k: drift_summary(per_video[k]) for k in DRIFT_KEYS},
          "per_video": {k: v.round(4).tolist() for k, v in per_video.items()},
          "background_shift": backdrop.mean(0).round(4).tolist(),
          "seam_change": float(np.mean(seam)) if seam else None,
          "inside_change": float(np.mean([r["inside_change"] for r in reports])),
          "videos": videos}


def world_long_reference(data_cfg, split: str, num: int, frames: int,
                         window_s: float = 2.0) -> tuple[list[str], dict]:
  """The procedural world's own clips of `frames` frames for the first `num` held-out captions of
  `split`, scored per window as generated videos are: (captions, {score: [videos, windows]},
  'background_shift' beside the scores).
  Over a minute the world's objects leave the frame, grow past it or shrink, so its own
  per-window adherence falls; that is the reference a model's drift is read against."""
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.frames, cfg.cache_dir = int(frames), ""
  captions, reports = [], []
  for b in _held_out(cfg, split, num):
    captions.append(str(b["caption"][0]))
    reports.append(drift_report(to_uint8(b["video"][0]), captions[-1], float(cfg.fps),
                                window_s))
  n_win = min(len(r["windows"]) for r in reports)
  return captions, {k: np.array([[r["windows"][w][k] for w in range(n_win)] for r in reports])
                    for k in (*DRIFT_KEYS, "background_shift")}


def steady_subset(result: dict, reference: dict, keys=("color", "shape")) -> dict:
  """The model's drift on the prompts whose world clip keeps the prompted object in view and
  readable in every window (each of `keys` >= 0.9 throughout): there a model should hold, while
  on the others even the ground truth does not."""
  keep = np.all([reference[k].min(1) >= 0.9 for k in keys], axis=0)
  out = {"num_videos": int(keep.sum()), "rule": f"world clip's {' and '.join(keys)} >= 0.9 in "
                                                "every window"}
  if keep.sum() >= 2:
    out["drift"] = {k: drift_summary(np.asarray(result["per_video"][k])[keep][:, :
                                     reference[k].shape[1]]) for k in DRIFT_KEYS}
  return out


def evaluate_long_workdir(workdir: str, *, seconds: float = 60.0, split: str = "test",
                          num_videos: int = 2, prompt: str | None = None, seed: int = 0,
                          window: int | None = None, overlap: int = 1, batch: int = 8,
                          num_steps: int | None = None, guidance_scale: float | None = None,
                          extend_guidance: float | None = None) -> dict:
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(workdir, on_long="warn")
  reference = None
  if prompt:
    captions = [prompt]
  elif t2v.config.data.name == "shapes_world":
    frames = t2v.resolve_size(None, None, None, None, seconds)[0]
    captions, reference = world_long_reference(t2v.config.data, split, num_videos, frames)
  else:
    captions = held_out_captions(t2v.config.data, split, num_videos)
  result = evaluate_long(t2v, captions, seconds=seconds, window=window, overlap=overlap,
                         seed=seed, batch=batch, num_steps=num_steps,
                         guidance_scale=guidance_scale, extend_guidance=extend_guidance)
  result.pop("videos")
  result["captions"] = captions
  if reference is not None:
    result["world_reference"] = {k: drift_summary(reference[k]) for k in DRIFT_KEYS}
    result["world_reference"]["background_shift"] = (
        reference["background_shift"].mean(0).round(4).tolist())
    result["steady"] = steady_subset(result, reference)
  return result

"""`sora-jax eval t2v`: does a text-to-video model follow its prompts?

Prompts are the captions of held-out procedural clips; the world evaluator recovers objects from
the generated pixels and scores colour, shape, motion direction, permanence and plausibility.
The same videos scored against other clips' captions (a derangement) give the chance level, so
"far above chance" is a measured gap, not an impression.
"""
from __future__ import annotations

import numpy as np

from sora_jax.data import pipeline
from sora_jax.eval import worlds as world_eval


def held_out_captions(data_cfg, split: str, num: int) -> list[str]:
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.caption = "short"
    cfg.batch_size = 1
  it = pipeline.make_iterator(cfg, split, seed=0, shuffle=False, num_epochs=1,
                              process_index=0, process_count=1, drop_remainder=False)
  out = []
  for batch in it:
    out.append(str(batch["caption"][0]))
    if len(out) >= num:
      break
  return out


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
  scores = world_eval.score_videos(videos, captions, fps=fps)
  # Chance: each video against another clip's caption (a fixed derangement).
  shifted = captions[1:] + captions[:1]
  chance = world_eval.score_videos(videos, shifted, fps=fps)
  return {"num_videos": len(videos), "adherence": scores, "chance": chance,
          "size": list(videos[0].shape[:3]) if videos else None, "videos": videos}


def evaluate_workdir(workdir: str, split: str = "test", num_videos: int = 32,
                     seed: int = 0, size: dict | None = None) -> dict:
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(workdir, on_long="warn")   # captions as training cut them
  captions = held_out_captions(t2v.config.data, split, num_videos)
  result = evaluate(t2v, captions, seed=seed, size=size)
  result.pop("videos")
  result["split"] = split
  return result


def mean_gap(result: dict, keys=("color", "direction")) -> float:
  return float(np.mean([result["adherence"][k] - result["chance"][k] for k in keys]))

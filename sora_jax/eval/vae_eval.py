"""`sora-jax eval vae`: PSNR / SSIM / compression ratio of a trained VAE on held-out clips of the
procedural world and, given a folder of real videos, on real footage; and the world evaluator's
scores of its reconstructions (the ceiling of any text-to-video model on its latents).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax import runs
from sora_jax.data import pipeline
from sora_jax.models import vae as vae_lib
from sora_jax.models.vae import validate_vae_config
from sora_jax.systems.vae import VAESystem, to_model_range


def compression_ratio(frames: int, height: int, width: int, vae_cfg) -> float:
  lat = vae_lib.latent_shape(frames, height, width, vae_cfg)
  return (frames * height * width * 3) / math.prod(lat)


@functools.lru_cache(maxsize=8)
def _metrics_fn(system: VAESystem):
  return jax.jit(system.eval_metrics)


def evaluate(system: VAESystem, params, data_cfg, split: str, num_clips: int) -> dict:
  data_cfg = data_cfg.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.batch_size = min(int(data_cfg.batch_size), num_clips)
  it = pipeline.make_iterator(data_cfg, split, seed=0, shuffle=False, num_epochs=1,
                              process_index=0, process_count=1, drop_remainder=False)
  sums: dict[str, float] = {}
  seen = 0
  for batch in it:
    n = min(len(batch["video"]), num_clips - seen)
    if n <= 0:
      break
    video = jnp.asarray(to_model_range(batch["video"][:n]))
    m = {k: float(v) for k, v in _metrics_fn(system)(params, video).items()}
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v) * n
    seen += n
  if not seen:
    raise ValueError(f"split {split!r} of {data_cfg.name} yielded no clips")
  out = {k: v / seen for k, v in sums.items()}
  out["clips"] = seen
  out["compression_ratio"] = compression_ratio(data_cfg.frames, data_cfg.height,
                                               data_cfg.width, system.cfg)
  return out


def adherence_ceiling(system: VAESystem, params, data_cfg, split: str, num_clips: int,
                      batch: int = 8) -> dict:
  """World-evaluator scores of held-out clips as rendered and as this VAE reconstructs them.

  The reconstruction row bounds text-to-video on this VAE: a DiT that generated the very latents
  of these clips would decode to exactly these videos. Shape is the score a soft decoder loses
  first (the classifier reads corners and solidity; RESULTS.md, issue 13).
  """
  from sora_jax.data import world as world_lib
  from sora_jax.eval import worlds
  d = data_cfg
  clips = [world_lib.generate_clip(seed, d.frames, d.height, d.width, d.fps, split=split,
                                   world=d.world) for seed in range(num_clips)]
  rendered = [c["video"] for c in clips]
  recon = []
  fn = jax.jit(system.reconstruct)
  for i in range(0, num_clips, batch):
    x = to_model_range(np.stack(rendered[i:i + batch]))
    x_hat = np.asarray(fn(params, jnp.asarray(x)))
    recon += list(np.clip((x_hat + 1) * 127.5, 0, 255).round().astype(np.uint8))
  return {"world": d.world, "clips": num_clips,
          "as_rendered": worlds.score_videos(rendered, clips, d.fps),
          "reconstructed": worlds.score_videos(recon, clips, d.fps)}


def evaluate_workdir(workdir: str, split: str = "test", num_clips: int = 32,
                     folder: str | None = None, frames: int | None = None,
                     height: int | None = None, width: int | None = None,
                     world: str | None = None) -> dict:
  """Held-out procedural clips (and a video folder) at the run's size unless overridden: the
  VAE is causal and fully convolutional, so it applies to any 1 + tc*k frames and any size
  divisible by its spatial compression."""
  system, params = runs.open_vae(workdir)
  data = system.config.data.copy_and_resolve_references()
  with data.unlocked():
    data.frames = frames or data.frames
    data.height, data.width = height or data.height, width or data.width
    data.world = world or data.world
  validate_vae_config(system.cfg, data.frames, data.height, data.width)
  result = {"procedural": evaluate(system, params, data, split, num_clips)}
  if data.name == "shapes_world":
    result["adherence_ceiling"] = adherence_ceiling(system, params, data, split, num_clips)
  if folder:
    real = data.copy_and_resolve_references()
    with real.unlocked():
      real.name, real.source, real.folder = "video_folder", "tfds", folder
    from sora_jax.data import builders
    builders.prepare(real)  # idempotent: decodes the folder once into array_record
    result["video_folder"] = evaluate(system, params, real, "train", num_clips)
  result["frames"], result["height"], result["width"] = data.frames, data.height, data.width
  return result

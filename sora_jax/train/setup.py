"""What a run resolves before its system is built, and the training recipe of each task.

Values that depend on data or on another run — the t2v `vae` section (from `vae_workdir`), the
latent scale (a VAE forward over one training batch), the timestep shift and token counts — are
resolved here once, at the start of a run, logged, and written into the config that goes to the
run's config.json. Systems and inference then only read them.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.data import pipeline
from sora_jax.systems.vae import to_model_range

log = logging.getLogger(__name__)


def estimate_latent_scale(vae_system, vae_params, config) -> float:
  """1 / std of the VAE's latent means over one training batch: rectified flow pits the data
  against N(0, 1) noise, so latents should have unit std."""
  d = config.data
  batch = next(pipeline.make_iterator(d, d.split, seed=int(config.seed) + 99, process_index=0,
                                      process_count=1))
  mean = jax.jit(vae_system.encode)(vae_params, jnp.asarray(to_model_range(batch["video"])))
  return float(1.0 / max(float(jnp.std(mean)), 1e-6))


def resolve(config, workdir: str | None = None) -> tuple[Any, dict]:
  """(resolved config copy, {name: value} resolved here); t2v also returns the VAE it loaded.

  A resumed run takes the latent scale its workdir recorded, so a restart never re-estimates it.
  """
  config = config.copy_and_resolve_references()
  resolved: dict[str, Any] = {}
  if config.task != "t2v":
    return config, resolved
  config = runs.with_vae_of(config)
  vae = runs.vae_of(config)
  scale = float(config.diffusion.latent_scale)
  # A resumed run keeps its own scale; a fine-tune keeps the one its weights were trained at
  # (estimated again on its own data, the demo's chained stages drifted by up to 10 %).
  for source in (workdir, config.train.get("init_from", "")):
    if scale <= 0 and source:
      scale = _saved_latent_scale(source)
      if scale > 0:
        log.info("diffusion.latent_scale=%.4g from %s", scale, source)
  if scale <= 0:
    scale = estimate_latent_scale(*vae, config)
    log.info("latent std %.4g -> diffusion.latent_scale=%.4g", 1.0 / scale, scale)
  with config.unlocked():
    config.diffusion.latent_scale = scale
  resolved["latent_scale"] = scale
  system = runs.t2v_system(config, vae=vae)
  tokens = system.num_tokens()
  resolved["tokens"] = tokens
  if config.diffusion.objective == "flow":
    resolved["shift"] = float(system.objective.shift_for(tokens))
  log.info("resolved: %s", resolved)
  return config, {**resolved, "_system": system}


def _saved_latent_scale(run_dir: str) -> float:
  """The latent scale a t2v run (workdir or export) was trained at; 0 when it has none."""
  if not runs.has_config(run_dir):
    return 0.0
  previous = runs.load_config(run_dir)
  return float(previous.diffusion.latent_scale) if previous.task == "t2v" else 0.0


def make_recipe(config, resolved: dict):
  """The object the loop trains: init / loss / prepare / make_iterator / visualize / evaluate."""
  if config.task == "vae" and config.vae.get("refine_t2v", ""):
    from sora_jax.train.decoder_refining import DecoderRefining
    return DecoderRefining(config)
  if config.task == "vae":
    from sora_jax.train.vae_training import VAETraining
    return VAETraining(config)
  if config.task == "t2v":
    from sora_jax.train.t2v_training import T2VTraining
    return T2VTraining(config, resolved.get("_system") or runs.t2v_system(config))
  raise config_lib.ConfigError(
      f"config.task={config.task!r} has no trainer (class_image is for `sora-jax flops` and "
      f"`shardings` only); train 'vae' or 't2v'")


def recipe_for(config, workdir: str | None = None):
  """(resolved config, recipe): what `Trainer` does before it builds a mesh."""
  config, resolved = resolve(config, workdir)
  return config, make_recipe(config, resolved)


def held_out_num(train_cfg) -> int:
  """Held-out clips an evaluation reads: train.eval_num sampled, train.eval_loss_num (if more)
  for the loss report."""
  return max(int(train_cfg.eval_num), int(train_cfg.eval_loss_num), 1)


def held_out(config, num: int) -> dict | None:
  """The first `num` clips of data.eval_split (short captions), or None if there is none."""
  d = config.data.copy_and_resolve_references()
  with d.unlocked():
    d.caption = "short"
    d.batch_size = num
  try:
    it = pipeline.make_iterator(d, d.eval_split, seed=0, shuffle=False, num_epochs=1,
                                process_index=0, process_count=1, drop_remainder=False)
    batch = next(it)
  except (StopIteration, FileNotFoundError, ValueError, KeyError) as e:
    log.warning("no held-out evaluation: data.eval_split=%r gave no clips (%s)", d.eval_split, e)
    return None
  return {k: np.asarray(v) for k, v in batch.items()}


class WorkdirConflict(ValueError):
  """The workdir holds another run; nothing was written to it."""


# What makes a workdir's checkpoints unusable by a config: the params' shapes and meaning.
_ARCHITECTURE = {
    "vae": {"vae": ("temporal_compression", "spatial_compression", "latent_channels", "channels",
                    "channel_mult", "num_res_blocks", "patch_size", "mid_attention", "shortcut",
                    "shortcut_layout", "param_dtype", "disc_channels", "disc_layers")},
    "t2v": {"model": ("variant", "patch", "width", "depth", "heads", "mlp", "mlp_ratio",
                      "qk_norm", "pos", "scan_layers", "param_dtype", "cond", "num_classes",
                      "learn_sigma", "in_channels", "out_channels", "layout_readout",
                      "layout_prior"),
            "text": ("encoder", "t5_path", "width", "depth", "heads", "max_len"),
            "diffusion": ("objective",)},
}
RUN_FILES = ("config.json", "resolved.json", "metrics.jsonl", "nonfinite.json", "checkpoints",
             "damaged_checkpoints", "videos", "tb")


def architecture_diff(old, new) -> list[str]:
  """'key: old → new' for every difference that makes `old`'s checkpoints unusable by `new`."""
  if old.task != new.task:
    return [f"task: {old.task} → {new.task}"]
  out = []
  for section, keys in _ARCHITECTURE.get(new.task, {}).items():
    for k in keys:
      a, b = old[section].get(k), new[section].get(k)
      if (list(a) if isinstance(a, (list, tuple)) else a) != (
          list(b) if isinstance(b, (list, tuple)) else b):
        out.append(f"{section}.{k}: {a} → {b}")
  if new.task == "t2v":
    a, b = (os.path.abspath(c.vae_workdir) if c.vae_workdir else "" for c in (old, new))
    if a != b:
      out.append(f"vae_workdir: {a or '(none)'} → {b or '(none)'}")
  if new.task == "vae" and (float(old.vae.adv_weight) > 0) != (float(new.vae.adv_weight) > 0):
    out.append(f"vae.adv_weight: {old.vae.adv_weight} → {new.vae.adv_weight} (critic on/off)")
  return out


def check_workdir(config, workdir: str, overwrite: bool = False) -> None:
  """Refuses, before anything is written, a workdir that holds a different run.

  Resuming the same run with other steps, learning rate or logging is fine (that is how a run
  is continued); another task or architecture is not. overwrite=True deletes the old run's
  files first.
  """
  if not runs.has_config(workdir):
    return
  old = runs.load_config(workdir)
  diff = architecture_diff(old, config)
  if not diff:
    return
  if not overwrite:
    raise WorkdirConflict(
        f"{workdir} holds another {old.task} run ({'; '.join(diff[:4])}"
        f"{'; ...' if len(diff) > 4 else ''}); nothing was written. Use another --workdir, or "
        f"--overwrite to delete that run and start afresh")
  import shutil
  for name in RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  log.warning("--overwrite: deleted the %s run in %s (%s)", old.task, workdir, "; ".join(diff))


def public(resolved: dict) -> dict:
  return {k: v for k, v in resolved.items() if not k.startswith("_")}


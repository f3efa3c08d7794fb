"""`sora-jax demo`: text-to-video from the built-in world on a CPU.

By default it samples from the small model shipped in `sora_jax/assets/demo` (EMA weights of a
VAE and a DiT trained on the procedural world). `sora-jax demo --train` makes those weights from
scratch with the project's own commands — the two stages of configs/demo.py, then an export —
which is exactly how the shipped ones were made.
"""
from __future__ import annotations

import os

import numpy as np

ASSETS = os.path.join(os.path.dirname(__file__), "assets", "demo")


def train_and_export(workdir: str = "workdirs/demo", out_dir: str = ASSETS) -> str:
  """Trains both demo stages (resuming if interrupted) and exports their EMA weights."""
  from configs import demo as demo_config
  from sora_jax.train import loop
  vae_dir, t2v_dir = os.path.join(workdir, "vae"), os.path.join(workdir, "t2v")
  loop.train(demo_config.get_config("stage=vae"), vae_dir)
  cfg = demo_config.get_config("stage=t2v").unlock()
  cfg.vae_workdir = os.path.abspath(vae_dir)
  loop.train(cfg.lock(), t2v_dir)
  return export_assets(vae_dir, t2v_dir, out_dir)


def export_assets(vae_dir: str, t2v_dir: str, out_dir: str = ASSETS) -> str:
  """EMA weights + configs of both stages into out_dir/{vae,t2v}, with relative links."""
  import jax
  from sora_jax.pipeline import _dummy_batch
  from sora_jax.train import export as export_lib
  from sora_jax.train.loop import load_run_config
  from sora_jax.train.state import unbox
  from sora_jax.train.t2v_task import T2VTask
  from sora_jax.eval.vae_eval import load_vae_task
  vae_task, _ = load_vae_task(vae_dir)
  d = vae_task.config.data
  dummy = {"video": np.zeros((1, d.frames, d.height, d.width, 3), np.float32)}
  vae_abstract = unbox(jax.eval_shape(vae_task.init, jax.random.key(0), dummy),
                       apply_constraint=False)
  # float16 on disk halves what ships in git; loading casts back to the model's dtype.
  export_lib.export(vae_dir, os.path.join(out_dir, "vae"), vae_abstract, dtype=np.float16)
  cfg = load_run_config(t2v_dir)
  task = T2VTask(cfg)
  abstract = unbox(jax.eval_shape(task.init, jax.random.key(0), _dummy_batch(task)),
                   apply_constraint=False)
  export_lib.export(t2v_dir, os.path.join(out_dir, "t2v"), abstract, dtype=np.float16,
                    config_updates={"vae_workdir": "../vae"})
  return out_dir


def run(prompt: str, out: str, seed: int = 0, workdir: str | None = None,
        train: bool = False) -> str:
  """Writes the video for `prompt` to `out` and returns its path."""
  from sora_jax.pipeline import TextToVideo
  from sora_jax.train import export as export_lib
  if train:
    train_and_export(workdir or "workdirs/demo")
  run_dir = workdir and os.path.join(workdir, "t2v")
  if not run_dir or not os.path.exists(os.path.join(run_dir, "config.json")):
    run_dir = os.path.join(ASSETS, "t2v")
  if not export_lib.has_export(run_dir) and not os.path.isdir(os.path.join(run_dir,
                                                                           "checkpoints")):
    raise FileNotFoundError(
        f"no demo model at {run_dir}; make one with `sora-jax demo --train` (about an hour on "
        f"2 CPU cores) or pass --workdir of a `sora-jax train` run with a t2v/ stage")
  t2v = TextToVideo.from_workdir(run_dir)
  frames = t2v(prompt, seed=seed)
  t2v.save(frames, out, prompt=prompt)
  return out

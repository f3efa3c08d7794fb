"""`sora-jax demo`: text-to-video from the built-in world on a CPU.

By default it samples from the small model shipped in `sora_jax/assets/demo` (EMA weights of a
VAE and a DiT trained on the procedural world). `sora-jax demo --train` makes those weights from
scratch with the project's own commands — the stages of configs/demo.py (VAE; DiT; DiT
fine-tuned on multi-shot clips; a layout readout and prior added, the prior fitted alone, then a
short joint fine-tune; a stage on a mix of sizes (wide, tall, longer, stills) packed into rows;
more steps at low noise on square clips, in two cosine cycles; the decoder fitted to that DiT's
latents), then an export into the workdir (WORKDIR/export/{vae,t2v}) — which is how the shipped
ones were made, and what `sora-jax demo --workdir=WORKDIR` then samples.
"""
from __future__ import annotations

import os

import numpy as np

ASSETS = os.path.join(os.path.dirname(__file__), "assets", "demo")
EXPORT = "export"   # train_and_export's {vae,t2v} inside its workdir


def model_dir(workdir: str | None) -> str:
  """The t2v run `sora-jax demo` samples: WORKDIR/export/t2v (what `demo --train` made), else
  WORKDIR/t2v (a `sora-jax train` run of stage=t2v), else the shipped model. The export comes
  first: WORKDIR/t2v of a `demo --train` workdir is only its first DiT stage."""
  from sora_jax import runs
  for d in ([os.path.join(workdir, EXPORT, "t2v"), os.path.join(workdir, "t2v")] if workdir
            else []):
    if runs.has_config(d):
      return d
  return os.path.join(ASSETS, "t2v")


def train_and_export(workdir: str = "workdirs/demo", out_dir: str | None = None,
                     recipe: str = "full") -> str:
  """Trains the demo stages of `recipe` (configs/demo.py: 'full' made the shipped weights, 'fast'
  fits 2 hours on 2 cores), each resuming if interrupted, and exports the EMA weights of the
  refined VAE and of the last DiT stage into out_dir (default WORKDIR/export). Not into the
  package: a run that is worse, or stopped halfway, must not replace the shipped model."""
  from configs import demo as demo_config
  from sora_jax.train import loop
  stages = demo_config.RECIPES[recipe]   # an unknown recipe fails here, before any training
  vae_dir = os.path.join(workdir, "vae")
  loop.train(demo_config.get_config("stage=vae"), vae_dir)
  t2v_dir = ""
  for stage in stages:
    cfg = demo_config.get_config(f"stage={stage},recipe={recipe}").unlock()
    cfg.vae_workdir = os.path.abspath(vae_dir)
    if t2v_dir:
      cfg.train.init_from = os.path.abspath(t2v_dir)   # the stage before, wherever workdir is
    t2v_dir = os.path.join(workdir, stage)
    loop.train(cfg.lock(), t2v_dir)
  # The decoder last: it is fitted to the latents of the DiT that ships.
  cfg = demo_config.get_config(f"stage=vae_refiner,recipe={recipe}").unlock()
  cfg.train.init_from, cfg.vae.refine_t2v = os.path.abspath(vae_dir), os.path.abspath(t2v_dir)
  refiner_dir = os.path.join(workdir, "vae_refiner")
  loop.train(cfg.lock(), refiner_dir)
  return export_assets(refiner_dir, t2v_dir, out_dir or os.path.join(workdir, EXPORT))


def export_assets(vae_dir: str, t2v_dir: str, out_dir: str = ASSETS) -> str:
  """EMA weights + configs of both stages into out_dir/{vae,t2v}, with relative links."""
  from sora_jax import runs
  vae_system, _ = runs.open_vae(vae_dir)
  # float16 on disk halves what ships in git; loading casts back to the model's dtype.
  runs.export(vae_dir, os.path.join(out_dir, "vae"),
              {"vae": runs.abstract_vae_params(vae_system)}, dtype=np.float16)
  t2v_system = runs.t2v_system(runs.load_config(t2v_dir, kind="t2v"), abstract=True)
  runs.export(t2v_dir, os.path.join(out_dir, "t2v"), runs.abstract_t2v_params(t2v_system),
              dtype=np.float16, config_updates={"vae_workdir": "../vae"})
  return out_dir


def run(prompt: str, out: str, *, workdir: str | None = None, train: bool = False,
        recipe: str = "full", safety_policy: str = "", frame_hooks=(), on_long: str = "error",
        **kw) -> dict:
  """Writes the labelled video for `prompt` to `out` and returns the write report.

  Takes every sampling option `sora-jax sample` takes. The demo is the first thing a newcomer
  runs, so without a signing key it makes the local test key (`sora-jax keys init`) and says so,
  instead of refusing; `sample` refuses.
  """
  from sora_jax import runs, sample_job
  from sora_jax.io import provenance
  from sora_jax.pipeline import TextToVideo
  if not kw.get("unsigned") and provenance.find_keys() is None:
    cert, _ = provenance.init_keys()
    print(f"made a local C2PA test key to sign outputs ({cert}; `sora-jax keys init`)")
  classifier, hooks = sample_job.preflight(
      prompt, out, num_frames=kw.get("num_frames"), overwrite=kw.get("overwrite", False),
      unsigned=kw.get("unsigned", False), safety_policy=safety_policy, frame_hooks=frame_hooks)
  if train:
    workdir = workdir or ("workdirs/demo" if recipe == "full" else f"workdirs/demo_{recipe}")
    train_and_export(workdir, recipe=recipe)
  run_dir = model_dir(workdir)
  if not runs.has_export(run_dir) and not os.path.isdir(os.path.join(run_dir, "checkpoints")):
    raise FileNotFoundError(
        f"no demo model at {run_dir}; make one with `sora-jax demo --train` (about 5 hours on "
        f"2 CPU cores) or pass --workdir of a `sora-jax train` run with a t2v/ stage")
  system, params = runs.open_t2v(run_dir)
  t2v = TextToVideo(system, params, classifier=classifier, on_long=on_long)
  return sample_job.run(t2v, prompt, out, hooks=hooks, **kw)

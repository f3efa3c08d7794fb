"""Study: does the text-to-video model's latent hold the shape its decoded video loses?

The shipped model's circles come out as lumpy rounded squares (`shape_by_noise`: from a real
circle noised to t = 0.4 it returns one in under half the frames). Either the DiT's latent no
longer says "circle", or it does and the decoder, trained only on the encoder's latents, cannot
read it. This runs the recipe's `stage=vae_refiner` (train/decoder_refining.py: the decoder
fine-tuned on pairs (latent the DiT made from a noised training clip, the clip), encoder and DiT
untouched) for any t2v run, then binds that DiT to the new decoder. If shape rises when
text-to-video samples are decoded by it, the information was in the latent.

  python experiments/refiner_decoder.py --t2v=sora_jax/assets/demo/t2v --clips=1024 \
      --steps=300 --out=workdirs/refiner          # then:
  python experiments/t2v_adherence.py --workdir=workdirs/refiner/t2v --num=64

Writes OUT/run (the training run: metrics.jsonl, checkpoints), OUT/vae (its EMA weights: the new
decoder with the old encoder) and OUT/t2v (the same DiT bound to OUT/vae), both float16 as the
demo ships them.
"""
from __future__ import annotations

import argparse
import os

from configs import demo as demo_config
from sora_jax import demo, runs
from sora_jax.train import loop


def stage_config(t2v: str, *, clips: int, steps: int, strengths: str = "", world: str = "",
                 adv_weight: float = 0.0, cache_dir: str = ""):
  """configs/demo.py:stage=vae_refiner for the DiT of `t2v` and the VAE it was trained on."""
  vae = runs.resolve_run_path(runs.load_config(t2v).vae_workdir, t2v)
  c = demo_config.get_config("stage=vae_refiner" + (f",world={world}" if world else "")
                             + f",steps={steps}").unlock()
  c.train.init_from, c.vae.refine_t2v, c.vae.refine_clips = vae, t2v, clips
  # The source VAE's layout (the shipped one predates the DC-AE shortcut fix).
  c.vae.shortcut_layout = runs.load_config(vae).vae.shortcut_layout
  if strengths:
    c.vae.refine_strengths = tuple(float(s) for s in strengths.split(","))
  if adv_weight:   # the critic of stage=vae_critic, on top (adaptive balance)
    c.vae.adv_weight, c.vae.adv_adaptive, c.vae.adv_start_step = adv_weight, True, 0
  if cache_dir:
    c.data.cache_dir = cache_dir
  return c.lock()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--t2v", default="sora_jax/assets/demo/t2v")
  ap.add_argument("--clips", type=int, default=demo_config.REFINER_CLIPS)
  ap.add_argument("--strengths", default="", help="SDEdit noise levels, e.g. 0.3,0.45,0.6,0.75 "
                  "(default: the stage's)")
  ap.add_argument("--world", default="", help="world of the pairs (default: the stage's)")
  ap.add_argument("--steps", type=int, default=demo_config.REFINER_STEPS)
  ap.add_argument("--adv_weight", type=float, default=0.0)
  ap.add_argument("--out", default="workdirs/refiner")
  a = ap.parse_args()
  config = stage_config(a.t2v, clips=a.clips, steps=a.steps, strengths=a.strengths,
                        world=a.world, adv_weight=a.adv_weight)
  run_dir = os.path.join(a.out, "run")
  loop.train(config, run_dir)
  demo.export_assets(run_dir, a.t2v, a.out)
  print(f"{a.out}/t2v: the DiT of {a.t2v} with the decoder of {run_dir}")


if __name__ == "__main__":
  main()

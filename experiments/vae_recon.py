"""Study: how well does a trained VAE reconstruct held-out procedural clips and real video?

  python experiments/vae_recon.py --workdir=workdirs/demo/vae --frames=17 \
      [--folder=../shared/data/real_videos] [--world=large] [--out=results/vae_recon]

Writes metrics.json (PSNR/SSIM/compression on the test split and on the real videos, and the
world evaluator's scores of the reconstructions: the ceiling of a text-to-video model on them),
curves.png (training loss/PSNR) and recon.png (input above reconstruction, frames left to right).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _plots import plot_curves, save_frames_png  # noqa: E402

import jax  # noqa: E402

from sora_jax import runs  # noqa: E402
from sora_jax.data import world  # noqa: E402
from sora_jax.eval import vae_eval  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--frames", type=int, default=17)
  ap.add_argument("--num", type=int, default=64)
  ap.add_argument("--folder", default=None)
  ap.add_argument("--world", default=None, help="world preset of the clips (default: the run's)")
  ap.add_argument("--out", default="results/vae_recon")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  result = vae_eval.evaluate_workdir(a.workdir, split="test", num_clips=a.num,
                                     folder=a.folder, frames=a.frames, world=a.world)
  with open(os.path.join(a.out, "metrics.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  plot_curves(a.workdir, ["recon", "psnr", "kl"], os.path.join(a.out, "curves.png"),
              f"VAE training ({a.workdir})")
  system, params = runs.open_vae(a.workdir)
  d = system.config.data
  clips = [world.generate_clip(s, a.frames, d.height, d.width, split="test",
                               world=a.world or d.world)["video"]
           for s in (11, 12, 13)]
  x = np.stack(clips).astype(np.float32) / 127.5 - 1
  x_hat = np.asarray(jax.jit(system.reconstruct)(params, x))
  to8 = lambda v: np.clip((v + 1) * 127.5, 0, 255).round().astype(np.uint8)  # noqa: E731
  vids, labels = [], []
  for i in range(len(clips)):
    vids += [clips[i], to8(x_hat[i])]
    labels += [f"test clip {i}: input", f"test clip {i}: reconstruction"]
  save_frames_png(vids, labels, os.path.join(a.out, "recon.png"))


if __name__ == "__main__":
  main()

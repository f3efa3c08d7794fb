"""Patch size: how many spacetime tokens the DiT sees, and what that buys, at one CPU budget.

  python experiments/patch_size.py                    # pt in {1, 2} x ph = pw in {1, 2, 4}
  python experiments/patch_size.py --patches 1x2x2,2x2x2 --steps 2000

Every run is the demo t2v recipe (Ti width, depth 6, the shipped VAE's latents) on 13-frame
clips (4 latent frames, so pt = 2 divides them; the recipe's 17 frames give 5), changing only
model.patch: the token count per clip goes from 256 (1x1x1) to 8 (2x4x4). The timestep shift
stays 'auto' (it follows the token count, as the recipe does). Writes
experiments/results/patch_size/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

PATCHES = "1x1x1,1x2x2,1x4x4,2x1x1,2x2x2,2x4x4"


def points(patches: list[str], frames: int) -> list[dict]:
  return _study.product(_study.sweep("patch", patches), _study.sweep("data.frames", [frames]))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=600)
  ap.add_argument("--patches", default=PATCHES)
  ap.add_argument("--frames", type=int, default=0,
                  help="clip frames, latent frames = 1 + (f-1)/4 even (default 13; --full 29)")
  a = ap.parse_args(argv)
  a.frames = a.frames or (29 if a.full else 13)
  _study.run_study("patch_size", points(a.patches.split(","), a.frames), a, x="tokens",
                   series=None, title="patch size: tokens per clip vs loss and adherence",
                   note="flow_loss is per latent element; a coarser patch predicts the same "
                        "latents through fewer, wider tokens.")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Resolution and aspect ratio: the same recipe trained at 32, 64 and 128 px and at 16:9 / 9:16.

  python experiments/resolution.py
  python experiments/resolution.py --sizes 64x64,128x128 --steps 2000

Each run is the demo t2v recipe (1x2x2 patches, the shipped VAE, which is fully convolutional
and encodes any size whose sides divide by 8) at one height x width: 20 tokens per clip at 32 px,
80 at 64, 320 at 128. The world renders each size natively, and the evaluator scores the
samples at that size. Writes experiments/results/resolution/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

SIZES = "32x32,64x64,128x128,64x112,112x64"


def points(sizes: list[str]) -> list[dict]:
  hw = [tuple(int(v) for v in s.split("x")) for s in sizes]
  return _study.sweep_many(("data.height", "data.width"), hw)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=600)
  ap.add_argument("--sizes", default=SIZES, help="HxW per run (sides divisible by 16)")
  a = ap.parse_args(argv)
  _study.run_study("resolution", points(a.sizes.split(",")), a, x="tokens", series=None,
                   title="resolution: tokens per clip vs loss and adherence")
  return 0


if __name__ == "__main__":
  sys.exit(main())

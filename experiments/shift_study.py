"""Timestep shift on the demo t2v recipe: shift = auto (the demo's: 3 at 80 tokens), 1, 0.56.

  python experiments/shift_study.py                         # auto, 1.0, 0.56 at 1500 steps
  python experiments/shift_study.py --shifts 3.0 --steps 1500 --out experiments/results/shift_large

t = 0 is data here, so a shift below 1 trains and samples nearer the data and one above 1 nearer
the noise, where a clip's layout is decided. 0.56 is the SD3 rule (1 at 256 tokens, scaled by
sqrt(tokens / 256)) at the demo's 80 tokens, the demo recipe's default until session 11. Each run
is the demo t2v recipe changed only in diffusion.shift (which also sets the sampling grid:
sample.shift='train'), with the loop's held-out evaluations along the run: flow loss on a fixed t
grid, the text gain and the world evaluator's adherence with chance. Writes table.json, table.md
and plot.png under --out (default experiments/results/shift).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

SHIFTS = "auto,1.0,0.56"


def points(shifts: list[str]) -> list[dict]:
  return _study.sweep("diffusion.shift", shifts)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=1500)
  ap.add_argument("--shifts", default=SHIFTS, help="'auto' or numbers, comma-separated")
  ap.add_argument("--eval_points", type=int, default=3, help="held-out evaluations per run")
  a = ap.parse_args(argv)
  _study.run_study("shift", points(a.shifts.split(",")), a, x="step", series="run",
                   eval_points=a.eval_points,
                   title="timestep shift vs loss, text gain and adherence")
  return 0


if __name__ == "__main__":
  sys.exit(main())

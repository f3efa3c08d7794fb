"""Sora's scaling claim, tested at CPU size: loss and prompt adherence against training compute
for several model sizes.

  python experiments/scaling.py      # 3 widths x 4 budgets: experiments/results/scaling (~1 h)
  python experiments/scaling.py --sizes 96,192,384,768 --steps 4000   # on a bigger machine

Each size is the demo t2v recipe (depth 6, 1x2x2 patches, the shipped VAE's latents) at one
width, trained --steps steps with a constant learning rate after warm-up, and evaluated
--budgets times along the way (every steps/budgets steps): with no decay in the schedule, the
EMA weights at step s are a fair model for the budget of s steps. Training FLOPs = 3 x forward
MACs x 2 x clips seen. Writes experiments/results/scaling/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

HEAD_DIM = 64


def points(sizes: list[int]) -> list[dict]:
  return _study.sweep_many(("model.width", "model.heads"),
                           [(w, max(2, w // HEAD_DIM)) for w in sizes])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=2000, eval_num=32)
  ap.add_argument("--sizes", default="96,192,288", help="model widths (heads = width / 64, at least 2)")
  ap.add_argument("--budgets", type=int, default=4, help="evaluations along each run")
  a = ap.parse_args(argv)
  sizes = [int(s) for s in a.sizes.split(",")]

  def constant_lr(c, p):
    c = c.unlock()
    c.optim.schedule = "constant"
    return c.lock()

  _study.run_study("scaling", points(sizes), a, x="flops", series="model.width",
                   title="loss and adherence against training compute, per model width",
                   eval_points=a.budgets, configure=constant_lr,
                   note="One run per width; each row is one evaluation along it (a budget).")
  return 0


if __name__ == "__main__":
  sys.exit(main())

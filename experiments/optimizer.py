"""Optimizer for the demo DiT: AdamW's learning rate against Muon, at a fixed step budget.

  python experiments/optimizer.py                                  # the three runs below
  python experiments/optimizer.py --runs adamw:1e-3,muon:3e-4 --steps 1500

A run is NAME:LR. adamw:LR is AdamW at LR (the demo recipe is adamw:3e-4). muon:LR is Muon at
optim.muon_lr (default 0.02; --muon_lr) for every matrix and kernel, with AdamW at LR for biases,
norms and embeddings (sora_jax/train/optimizer.py). On a 2-core CPU a step is the budget, so the
question is which optimizer learns the most per step. Each run is the demo t2v recipe changed
only in its optim keys, with the loop's held-out evaluations: flow loss on a fixed t grid, text
gain and adherence with chance. Writes table.json, table.md and plot.png under --out (default
experiments/results/optimizer).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

RUNS = "adamw:3e-4,adamw:1e-3,muon:3e-4"


def points(runs: list[str], muon_lr: float = 0.02) -> list[dict]:
  out = []
  for run in runs:
    name, _, lr = run.partition(":")
    try:
      rate = float(lr)
    except ValueError:
      rate = None
    if name not in ("adamw", "muon") or rate is None or rate <= 0:
      raise ValueError(f"--runs entry {run!r} is not NAME:LR with NAME adamw or muon and LR > 0; "
                       "e.g. adamw:1e-3 or muon:3e-4")
    point = {"optim.name": name, "optim.lr": rate}
    if name == "muon":
      point["optim.muon_lr"] = muon_lr
    out.append(point)
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=1500)
  ap.add_argument("--runs", default=RUNS, help="NAME:LR, comma-separated")
  ap.add_argument("--muon_lr", type=float, default=0.02, help="Muon's rate for matrices")
  ap.add_argument("--eval_points", type=int, default=3, help="held-out evaluations per run")
  a = ap.parse_args(argv)
  _study.run_study("optimizer", points(a.runs.split(","), a.muon_lr), a, x="step", series="run",
                   eval_points=a.eval_points,
                   title="DiT optimizer vs loss, text gain and adherence")
  return 0


if __name__ == "__main__":
  sys.exit(main())

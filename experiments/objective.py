"""Objective: rectified flow vs DDPM-eps vs DDPM-v on the same model, data and budget.

  python experiments/objective.py
  python experiments/objective.py --objectives flow,v --steps 2000

Every run is the demo t2v recipe changed only in diffusion.objective and its sampler (flow:
Euler on the shifted schedule; eps and v: DDIM, trailing spacing, the linear beta schedule), with
the same number of sampling steps and guidance scale. Every run trains text-to-video only (no
frame tasks): the frame-conditioned tasks exist for rectified flow alone, and a flow run that
spent part of its steps on them would not be compared on equal terms. The loss column is each
objective's own training loss, so it is not comparable across rows; adherence (world
evaluator, with chance) is.
Writes experiments/results/objective/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402
from sora_jax.config_sections import SAMPLER_FOR_OBJECTIVE  # noqa: E402


def points(objectives: list[str]) -> list[dict]:
  return _study.sweep_many(("diffusion.objective", "sample.sampler"),
                           [(o, SAMPLER_FOR_OBJECTIVE[o]) for o in objectives])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=1500, eval_num=32)   # the committed run (~50 min here)
  ap.add_argument("--objectives", default="flow,eps,v")
  a = ap.parse_args(argv)
  names = a.objectives.split(",")
  unknown = [o for o in names if o not in SAMPLER_FOR_OBJECTIVE]
  if unknown:
    ap.error(f"unknown --objectives {unknown}; known: {', '.join(SAMPLER_FOR_OBJECTIVE)}")

  def text_only(c, p):
    c = c.unlock()
    c.diffusion.frame_tasks = ""
    return c.lock()

  _study.run_study("objective", points(names), a, x="diffusion.objective", series=None,
                   configure=text_only, title="objective: rectified flow vs DDPM eps / v",
                   note="flow_loss here is each objective's own loss (not comparable across "
                        "objectives); compare adherence.")
  return 0


if __name__ == "__main__":
  sys.exit(main())

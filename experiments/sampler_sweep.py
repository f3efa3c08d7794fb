"""Study: what the sampler buys a trained text-to-video model. Every (steps, guidance, sampling
timestep shift, layout prior strength) on one grid, the same held-out prompts and seeds, world-evaluator scores against
chance, shape broken down by the prompted shape (a circle's blur and a star's fail differently).

  python experiments/sampler_sweep.py --workdir=sora_jax/assets/demo/t2v --num=64 \
      --steps=25,50 --guidance=3,5,7 --shift=train,1 --prior_strength=0.9 \
      --out=experiments/results/sampler

Writes table.md and metrics.json (one row per setting, in the order run).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

from sora_jax.eval import t2v_eval
from sora_jax.pipeline import TextToVideo


def _floats(text: str) -> list[float]:
  return [float(v) for v in text.split(",") if v]


def sweep(workdir: str, *, num: int, split: str, steps: list[int], guidance: list[float],
          prior_strength: list[float | None], shift: list[str | None] = (None,), world: str = "",
          seed: int = 0) -> list[dict]:
  rows = []
  for strength, sh in itertools.product(prior_strength, shift):
    # None keeps the run's own sample.shift (which may differ from its training shift).
    overrides = {"layout_prior_strength": strength} | ({} if sh is None else {"shift": sh})
    t2v = TextToVideo.from_workdir(workdir, on_long="warn", sample=overrides)
    resolved = round(float(t2v.system.objective.sample_shift(t2v.config.sample,
                                                             t2v.system.num_tokens())), 3)
    captions = t2v_eval.held_out_captions(t2v_eval.data_of_world(t2v.config.data, world),
                                          split, num)
    for n, g in itertools.product(steps, guidance):
      r = t2v_eval.evaluate(t2v, captions, num_steps=n, guidance_scale=g, seed=seed)
      r.pop("videos")
      rows.append({"steps": n, "guidance": g, "shift": sh or "run's", "resolved_shift": resolved,
                   "layout_prior_strength": t2v.config.sample.layout_prior_strength,
                   "split": split, **{k: r[k] for k in ("adherence", "chance", "shape_by_shape",
                                                        "direction_by_motion")}})
      print(json.dumps({k: rows[-1][k] for k in ("steps", "guidance", "shift",
                                                  "layout_prior_strength",
                                                  "adherence", "shape_by_shape")}))
  return rows


def table(rows: list[dict]) -> str:
  shapes = sorted({s for r in rows for s in r["shape_by_shape"]})
  head = (["steps", "guidance", "sampling shift", "prior strength", "colour", "direction", "shape"]
          + [f"shape: {s}" for s in shapes])
  lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
  for r in rows:
    a, c = r["adherence"], r["chance"]
    cells = [str(r["steps"]), f"{r['guidance']:g}", f"{r['shift']} ({r['resolved_shift']})",
             f"{r['layout_prior_strength']:g}"]
    cells += [f"{a[k]:.2f} ({c[k]:.2f})" for k in ("color", "direction", "shape")]
    cells += [f"{r['shape_by_shape'][s][0]:.2f}" if s in r["shape_by_shape"] else "" for s in
              shapes]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=64)
  ap.add_argument("--split", default="test")
  ap.add_argument("--steps", default="25", help="sampling steps, comma-separated")
  ap.add_argument("--guidance", default="5", help="CFG scales, comma-separated")
  ap.add_argument("--prior_strength", default="",
                  help="layout prior strengths, comma-separated (default: the run's)")
  ap.add_argument("--shift", default="",
                  help="sampling timestep shifts, comma-separated ('train': the run's training "
                       "shift; default: the run's own sample.shift)")
  ap.add_argument("--world", default="", help="prompts from this world instead of the run's")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="experiments/results/sampler")
  a = ap.parse_args()
  rows = sweep(a.workdir, num=a.num, split=a.split, steps=[int(v) for v in _floats(a.steps)],
               guidance=_floats(a.guidance), prior_strength=_floats(a.prior_strength) or [None],
               shift=a.shift.split(",") if a.shift else [None], world=a.world, seed=a.seed)
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "metrics.json"), "w") as f:
    json.dump({"workdir": a.workdir, "num": a.num, "rows": rows}, f, indent=2)
  text = table(rows)
  with open(os.path.join(a.out, "table.md"), "w") as f:
    f.write(f"`{a.workdir}`, {a.num} {a.split} prompts, seed {a.seed}; chance in brackets\n\n"
            + text)
  print(text)


if __name__ == "__main__":
  main()

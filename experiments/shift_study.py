"""Timestep shift on the demo t2v config: short runs at shift = auto (0.56 at 80 tokens), 1, 3.

  python experiments/shift_study.py --steps 1000 --out experiments/results/shift

Each run trains the demo DiT (configs/demo.py:stage=t2v) on the shipped demo VAE's latents for
--steps steps (its own workdir; resumable, skipped when finished) and ends with the loop's
held-out evaluation: flow loss on a fixed grid of t and world-evaluator adherence on
--eval_num held-out prompts, with chance levels. Writes table.json and table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

# The configs package lives at the repository root, beside experiments/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import demo as demo_config
from sora_jax import demo
from sora_jax.train import loop
from sora_jax.train import metrics as metrics_lib

SHIFTS = ("auto", "1.0", "3.0")
KEYS = ("flow_loss", "color", "direction", "shape", "overall")


def config_for(shift: str, steps: int, eval_num: int, cache_dir: str, cache_clips: int):
  c = demo_config.get_config(f"stage=t2v,steps={steps}").unlock()
  c.vae_workdir = os.path.join(demo.ASSETS, "vae")
  c.diffusion.shift = shift
  c.data.cache_dir, c.data.cache_clips = cache_dir, cache_clips
  c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 10)
  c.train.sample_every = 0
  c.train.ckpt_every = steps
  c.train.eval_every, c.train.eval_num = steps, eval_num
  return c.lock()


def last_eval(workdir: str) -> dict:
  rows = [r for r in metrics_lib.read_metrics(workdir) if "eval/flow_loss" in r]
  return {k[len("eval/"):]: v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--eval_num", type=int, default=32)
  ap.add_argument("--cache_clips", type=int, default=1024)
  ap.add_argument("--shifts", default=",".join(SHIFTS))
  ap.add_argument("--workdir", default="workdirs/shift_study")
  ap.add_argument("--out", default="experiments/results/shift")
  a = ap.parse_args(argv)
  jax.config.update("jax_threefry_partitionable", True)
  rows = []
  for shift in a.shifts.split(","):
    wd = os.path.join(a.workdir, f"shift_{shift}")
    cfg = config_for(shift, a.steps, a.eval_num, os.path.join(a.workdir, "latents"),
                     a.cache_clips)
    t0 = time.time()
    if not last_eval(wd) or metrics_lib.read_metrics(wd)[-1].get("step", 0) < a.steps:
      loop.train(cfg, wd)
    resolved = json.load(open(os.path.join(wd, "resolved.json")))
    rows.append({"shift": shift, "resolved_shift": resolved.get("shift"), "steps": a.steps,
                 "wall_s": round(time.time() - t0, 1), **last_eval(wd)})
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  lines = ["| shift | resolved | " + " | ".join(KEYS) + " |", "|---" * (2 + len(KEYS)) + "|"]
  for r in rows:
    cells = [f"{r.get(k, float('nan')):.3f}" + (f" ({r[k + '_chance']:.2f})" if k + "_chance" in r
                                                else "") for k in KEYS]
    lines.append(f"| {r['shift']} | {r['resolved_shift']:.3g} | " + " | ".join(cells) + " |")
  with open(os.path.join(a.out, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())

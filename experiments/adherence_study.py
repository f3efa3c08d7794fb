"""What makes the demo DiT follow its prompts: controlled runs at one CPU budget, one table.

  python experiments/adherence_study.py --variants baseline,simple,simple_detailed --steps 1000
  python experiments/adherence_study.py --list          # every variant and what it changes

Every run is the demo t2v config (configs/demo.py:stage=t2v plus the --base arguments) on the
latents of --vae_workdir (default: the shipped demo VAE), changed in exactly the keys its variant
names, trained for --steps steps in its own workdir
(resumable; skipped when finished) and ended by the training loop's held-out evaluation: flow
loss on a fixed grid of t and the world evaluator's colour / direction / shape / overall
adherence on --eval_num prompts of the eval split, each beside its chance level (the same videos
scored against other prompts). A variant that changes the data (world, caption) gets its own
latent cache; the others share one. Writes table.json and table.md under --out.
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

# name: (what it tests, config overrides as dotted keys). One axis per variant, against baseline.
VARIANTS = {
    "baseline": ("the shipped recipe (full world, mixed captions)", {}),
    "simple": ("one object per scene, gradient backdrop, no pillar/pan", {"data.world": "simple"}),
    "standard": ("one or two objects, pillar, no pan", {"data.world": "standard"}),
    "detailed": ("captions that describe every object", {"data.caption": "detailed"}),
    "simple_detailed": ("simple world, detailed captions",
                        {"data.world": "simple", "data.caption": "detailed"}),
    "patch1": ("1x1x1 patches: 320 tokens instead of 80", {"model.patch": (1, 1, 1)}),
    "patch122": ("1x2x2 patches (4x more tokens than 1x4x4 on a 4x4x4 VAE's latents)",
                 {"model.patch": (1, 2, 2)}),
    "wide": ("width 256 (Ti is 192)", {"model.width": 256, "model.heads": 4}),
    "lr1e-3": ("learning rate 1e-3 (3e-4)", {"optim.lr": 1e-3}),
    "shift1": ("timestep shift 1.0 ('auto' is 0.56 here)", {"diffusion.shift": "1.0"}),
    "cfg6": ("guidance scale 6 when sampling (3)", {"sample.guidance_scale": 6.0}),
}
KEYS = ("flow_loss", "color", "direction", "shape", "overall")
DATA_KEYS = ("data.world", "data.caption")


def config_for(name: str, steps: int, eval_num: int, workdir: str, cache_clips: int,
               base: str = "", vae_workdir: str = ""):
  overrides = VARIANTS[name][1]
  c = demo_config.get_config(f"stage=t2v,steps={steps}" + (f",{base}" if base else "")).unlock()
  c.vae_workdir = os.path.abspath(vae_workdir) if vae_workdir else os.path.join(demo.ASSETS, "vae")
  for key, value in overrides.items():
    section, field = key.split(".")
    c[section][field] = value
  data_tag = "_".join(str(c[k.split(".")[0]][k.split(".")[1]]) for k in DATA_KEYS)
  c.data.cache_dir = os.path.join(workdir, f"latents_{data_tag}")
  c.data.cache_clips = cache_clips
  c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 10)
  c.train.sample_every = 0
  c.train.ckpt_every = steps
  c.train.eval_every, c.train.eval_num = steps, eval_num
  return c.lock()


def last_eval(workdir: str) -> dict:
  rows = [r for r in metrics_lib.read_metrics(workdir) if "eval/flow_loss" in r]
  return {k[len("eval/"):]: v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}


def finished(workdir: str, steps: int) -> bool:
  rows = metrics_lib.read_metrics(workdir) if os.path.isdir(workdir) else []
  return bool(last_eval(workdir)) and rows[-1].get("step", 0) >= steps


def table(rows) -> str:
  lines = ["| variant | changes | " + " | ".join(KEYS) + " |", "|---" * (2 + len(KEYS)) + "|"]
  for r in rows:
    cells = [f"{r.get(k, float('nan')):.3f}" + (f" ({r[k + '_chance']:.2f})"
                                                if k + "_chance" in r else "") for k in KEYS]
    lines.append(f"| {r['variant']} | {r['changes']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default="baseline,simple,simple_detailed")
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--eval_num", type=int, default=32)
  ap.add_argument("--cache_clips", type=int, default=1024)
  ap.add_argument("--workdir", default="workdirs/adherence_study")
  ap.add_argument("--base", default="",
                  help="configs/demo.py arguments every variant starts from, e.g. "
                       "'world=simple,comp=4x4x4,zch=8,patch=1x4x4'")
  ap.add_argument("--vae_workdir", default="",
                  help="the VAE run whose latents the DiTs learn (default: the shipped demo VAE)")
  ap.add_argument("--out", default="experiments/results/adherence")
  ap.add_argument("--list", action="store_true", help="print the variants and exit")
  a = ap.parse_args(argv)
  if a.list:
    for name, (what, overrides) in VARIANTS.items():
      print(f"{name:16s} {what}  {overrides}")
    return 0
  names = [v.strip() for v in a.variants.split(",") if v.strip()]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    ap.error(f"unknown --variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
  jax.config.update("jax_threefry_partitionable", True)
  configs = {n: config_for(n, a.steps, a.eval_num, a.workdir, a.cache_clips, a.base,
                           a.vae_workdir) for n in names}
  rows = []
  for name, cfg in configs.items():
    wd = os.path.join(a.workdir, name)
    t0 = time.time()
    if not finished(wd, a.steps):
      loop.train(cfg, wd)
    rows.append({"variant": name, "changes": VARIANTS[name][0], "steps": a.steps,
                 "wall_s": round(time.time() - t0, 1), **last_eval(wd)})
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(a.out, "table.md"), "w") as f:
    f.write(table(rows) + "\n")
  print(table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())

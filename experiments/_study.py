"""What every study runner shares: a sweep of config arguments, one resumable workdir per run,
the training loop's held-out evaluation, and one table (json + md) and plot per study.

A sweep point is a dict. Keys without a dot are arguments of configs/demo.py:stage=t2v (patch,
world, zch, ...); dotted keys ("model.depth") override the built config. Sweeps compose like
big_vision's `get_hyper`:

  points = product(sweep("patch", ["1x2x2", "1x4x4"]), sweep("model.depth", [4, 6]))

Each run trains in <workdir>/<study>/<point name> (the loop resumes there; a finished run is not
trained again) and ends with the loop's evaluation on held-out prompts: flow loss on a fixed
t grid and the world evaluator's colour / shape / direction / permanence beside their chance
levels (the same videos scored against other prompts' captions). Rows also carry parameters,
tokens per clip, forward GMACs per clip, training FLOPs (3 x forward, 2 FLOPs per MAC, x clips
seen), wall time and the machine.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import demo as demo_config  # noqa: E402
from experiments._plots import write_table  # noqa: E402
from sora_jax import config as config_lib  # noqa: E402
from sora_jax import demo  # noqa: E402

EVAL_KEYS = ("color", "shape", "direction", "permanence", "overall")
# The held-out loss a swapped colour / shape / direction word adds (sora_jax.eval.counterfactual).
GAIN_KEYS = ("color_gain_pct", "shape_gain_pct", "direction_gain_pct")
SHARED_LATENTS = "workdirs/demo/latents"  # the shipped recipe's cache: reused when it matches


def sweep(key: str, values) -> list[dict]:
  return [{key: v} for v in values]


def product(*sweeps: list[dict]) -> list[dict]:
  return [dict(itertools.chain.from_iterable(p.items() for p in combo))
          for combo in itertools.product(*sweeps)]


def sweep_many(keys: tuple[str, ...], values) -> list[dict]:
  """Keys that move together: sweep_many(("model.width", "model.heads"), [(96, 2), (192, 3)])."""
  return [dict(zip(keys, v, strict=True)) for v in values]


def chain(*sweeps: list[dict]) -> list[dict]:
  return [p for s in sweeps for p in s]


def _fmt(value) -> str:
  """A sweep value as a config argument: (1, 2, 2) -> '1x2x2'."""
  return "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def point_name(point: dict) -> str:
  text = ",".join(f"{k}={_fmt(v)}" for k, v in point.items())
  return text.replace("/", "-").replace(":", "-") or "base"


def machine() -> str:
  import jax
  dev = jax.devices()[0]
  return f"{platform.machine()} {os.cpu_count()} cores, {dev.platform} ({dev.device_kind})"


def _split(point: dict) -> tuple[str, dict]:
  args = ",".join(f"{k}={_fmt(v)}" for k, v in point.items() if "." not in k)
  return args, {k: v for k, v in point.items() if "." in k}


def _set(c, key: str, value) -> None:
  *path, field = key.split(".")
  for p in path:
    c = c[p]
  if field not in c:
    raise KeyError(f"sweep key {key!r} is not in the config; see sora_jax/config_sections.py")
  c[field] = value


def smoke_batch(batch: int) -> int:
  """A smoke run's batch, raised to one clip per device: the data mesh splits it."""
  import jax
  return max(batch, jax.device_count())


FULL_BASE = "variant=B,res=256,frames=33,batch=64"   # --full: configs/t2v.py at pod size


def config_for(point: dict, *, steps: int, eval_num: int, eval_points: int = 1,
               base: str = "", vae_workdir: str = "", cache_dir: str = SHARED_LATENTS,
               cache_clips: int = 2048, smoke: bool = False, full: bool = False,
               sets: dict | None = None):
  """The demo t2v config at this sweep point (configs/t2v.py at FULL_BASE with full=True),
  trained `steps` and evaluated `eval_points` times; `sets`: dotted overrides for every run."""
  args, overrides = _split(point)
  overrides = {**(sets or {}), **overrides}
  if full:   # a pod: pixels through the VAE each step, no cache; base adds e.g. mesh sizes
    from configs import t2v as t2v_config
    arg = ",".join(a for a in (FULL_BASE, f"steps={steps}", base, args) if a)
    c = t2v_config.get_config(arg).unlock()
    c.vae_workdir = os.path.abspath(vae_workdir) if vae_workdir else ""
  else:
    arg = ",".join(a for a in (f"stage=t2v,steps={steps}", base, args,
                               "runlocal" if smoke else "") if a)
    c = demo_config.get_config(arg).unlock()
    c.vae_workdir = (os.path.abspath(vae_workdir) if vae_workdir else
                     "" if smoke else os.path.join(demo.ASSETS, "vae"))
    c.data.cache_dir, c.data.cache_clips = cache_dir, cache_clips
  if smoke:  # runlocal sizes, an untrained VAE (the shipped one is not runlocal's shape)
    c.data.batch_size = smoke_batch(c.data.batch_size)
    c.data.cache_clips = 8
    c.data.height = c.data.width = 32
    c.data.frames = 9
    c.sample.steps = 2
    c.diffusion.latent_scale = 1.0   # no estimate through the (untrained) VAE
  for key, value in overrides.items():
    _set(c, key, value)
  c.optim.warmup_steps = min(c.optim.warmup_steps, max(steps // 10, 1))
  c.train.sample_every = 0
  c.train.ckpt_every = steps
  c.train.eval_every = max(steps // max(eval_points, 1), 1)
  c.train.eval_num = eval_num
  c.train.log_every = max(1, min(c.train.log_every, steps // 4))
  return c.lock()


def parse_sets(items: list[str]) -> dict:
  """["mesh.fsdp=8", "mesh.distributed=True"] -> {"mesh.fsdp": 8, "mesh.distributed": True}."""
  import ast
  out = {}
  for item in items or []:
    key, eq, raw = item.partition("=")
    if not eq or "." not in key:
      raise ValueError(f"--set expects section.key=value, e.g. mesh.fsdp=8; got {item!r}")
    try:
      out[key.strip()] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      out[key.strip()] = raw
  return out


def dry_run(study: str, points: list[dict], configs: dict, workdir: str) -> list[dict]:
  """Compiles each run's train step for the mesh of the devices present (no training) and
  reports memory per device: a run that would not fit fails here, not on a booked pod."""
  from sora_jax.train import loop
  rows = []
  for p in points:
    c = configs[point_name(p)].unlock()
    c.train.dry_run = True
    if not c.diffusion.latent_scale:
      c.diffusion.latent_scale = 1.0   # no estimate through the VAE: nothing is trained
    if c.data.cache_dir:   # the same shapes from a cache of one batch, not thousands of clips
      c.data.cache_clips = c.data.batch_size
    facts = loop.train(c.lock(), os.path.join(workdir, study + "_dry_run", point_name(p)))
    rows.append({"run": point_name(p), **{k: facts.get(k) for k in (
        "params", "peak_bytes_estimate", "flops", "compile_s")}})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def evals(workdir: str) -> list[dict]:
  """Every held-out evaluation the run logged: [{'step', 'flow_loss', 'color', ...}]."""
  from sora_jax.train import metrics as metrics_lib
  out = []
  for r in metrics_lib.read_metrics(workdir):
    if "eval/flow_loss" in r:
      out.append({"step": r["step"], **{k[5:]: v for k, v in r.items() if k.startswith("eval/")}})
  by_step = {e["step"]: e for e in out}  # a resumed run re-logs: keep the last per step
  return [by_step[s] for s in sorted(by_step)]


def finished(workdir: str, steps: int) -> bool:
  e = evals(workdir) if os.path.isdir(workdir) else []
  return bool(e) and e[-1]["step"] >= steps


def model_facts(config) -> dict:
  """Parameters, tokens per clip and forward GMACs per clip (analytic; sora_jax.eval.flops)."""
  from sora_jax.eval import flops
  r = flops.flops_report(config, xla=False)[0]
  return {"params": r["params"], "tokens": r["tokens"], "gmacs": r["gmacs_formula"]}


def train_flops(facts: dict, batch: int, step: int) -> float:
  return 3.0 * 2.0 * facts["gmacs"] * 1e9 * batch * step


def run_point(study: str, point: dict, config, workdir: str, extra: dict | None = None
              ) -> list[dict]:
  """Trains (or resumes, or skips) one point; one row per evaluation it logged (plus `extra`)."""
  from sora_jax.train import loop
  wd = os.path.join(workdir, study, point_name(point))
  info_path = os.path.join(wd, "study_run.json")
  if not finished(wd, config.train.steps):
    t0 = time.time()
    loop.train(config, wd)
    info = json.load(open(info_path)) if os.path.exists(info_path) else {"wall_s": 0.0}
    info["wall_s"] += time.time() - t0
    info["machine"] = machine()
    with open(info_path, "w") as f:
      json.dump(info, f)
  info = json.load(open(info_path)) if os.path.exists(info_path) else {}
  facts = model_facts(config)
  rows = []
  for e in evals(wd):
    rows.append({"run": point_name(point), **point, **facts, "step": e["step"],
                 "flops": train_flops(facts, int(config.data.batch_size), e["step"]),
                 "wall_s": round(info.get("wall_s", float("nan")), 1),
                 "machine": info.get("machine", ""), **(extra or {}),
                 **{k: v for k, v in e.items() if k != "step"}})
  return rows


def table_md(rows: list[dict], axes: list[str], note: str = "") -> str:
  cols = ["params", "tokens", "step", "flops", "vae_psnr", "flow_loss", "text_gain_pct",
          *GAIN_KEYS, *EVAL_KEYS, "wall_s"]
  cols = [c for c in cols if any(c in r for r in rows)]
  head = ["run", *axes, *cols]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for r in rows:
    cells = [r["run"], *(str(r.get(a, "")) for a in axes)]
    for c in cols:
      v = r.get(c)
      if v is None:
        cells.append("")
      elif c in EVAL_KEYS and f"{c}_chance" in r:
        cells.append(f"{v:.2f} ({r[c + '_chance']:.2f})")
      elif c == "flops":
        cells.append(f"{v:.2e}")
      elif c == "params":
        cells.append(f"{v / 1e6:.2f}M")
      elif isinstance(v, float):
        cells.append(f"{v:.3f}" if c == "flow_loss" else f"{v:.2f}" if c in (
            "text_gain_pct", "vae_psnr", *GAIN_KEYS) else f"{v:g}")
      else:
        cells.append(str(v))
    lines.append("| " + " | ".join(cells) + " |")
  machines = sorted({r.get("machine", "") for r in rows} - {""})
  tail = ["", "Adherence cells: score (chance = the same videos scored against other prompts).",
          f"Machine: {'; '.join(machines) or 'unknown'}."]
  return "\n".join(lines + tail + ([note] if note else [])) + "\n"


def plot(rows: list[dict], x: str, series: str | None, out_png: str, title: str,
         keys=("vae_psnr", "flow_loss", "text_gain_pct", "color", "direction", "shape")) -> None:
  """One panel per metric against `x`, one line per value of `series` (chance dashed)."""
  keys = [k for k in keys if any(k in r for r in rows)]
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups: dict = {}
  for r in rows:  # series=None: every row on one line
    groups.setdefault(str(r.get(series, r["run"])) if series else "runs", []).append(r)
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
  axes = axes[0]
  for ax, key in zip(axes, keys):
    for name, rs in groups.items():
      rs = sorted(rs, key=lambda r: r[x] if isinstance(r[x], (int, float)) else str(r[x]))
      xs = [r[x] for r in rs]
      line, = ax.plot(xs, [r.get(key, float("nan")) for r in rs], "o-", label=name)
      if any(f"{key}_chance" in r for r in rs):
        ax.plot(xs, [r.get(f"{key}_chance", float("nan")) for r in rs], "--",
                color=line.get_color(), alpha=0.5)
    if x == "flops":
      ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_title(key + (" (dashed: chance)" if key in EVAL_KEYS else ""))
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


def add_args(ap: argparse.ArgumentParser, *, steps: int, eval_num: int = 16) -> None:
  ap.add_argument("--steps", type=int, default=steps, help="training steps per run")
  ap.add_argument("--eval_num", type=int, default=eval_num, help="held-out prompts per eval")
  ap.add_argument("--base", default="", help="configs/demo.py arguments every run starts from")
  ap.add_argument("--vae_workdir", default="", help="default: the shipped demo VAE")
  ap.add_argument("--cache_clips", type=int, default=2048,
                  help="clips in the latent cache (2048: the shipped recipe's cache is reused)")
  ap.add_argument("--workdir", default="workdirs/studies")
  ap.add_argument("--out", default="", help="default: experiments/results/<study>")
  ap.add_argument("--smoke", action="store_true",
                  help="tiny models and data (configs' runlocal): checks the study end to end")
  ap.add_argument("--full", action="store_true",
                  help=f"configs/t2v.py:{FULL_BASE} instead of the CPU demo recipe (a pod); "
                       "--base adds arguments, --vae_workdir names the VAE")
  ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                  help="a dotted config override for every run (repeatable): mesh sizes, "
                       "mesh.distributed=True on a pod, optim.lr=...")
  ap.add_argument("--dry_run", action="store_true",
                  help="compile every run for the devices present and report memory per "
                       "device; trains nothing")
  ap.add_argument("--list", action="store_true", help="print the runs and exit")


def run_study(study: str, points: list[dict], a: argparse.Namespace, *, x: str,
              series: str | None,
              title: str, note: str = "", eval_points: int = 1, configure=None,
              prepare=None, after=None) -> list[dict]:
  """Trains every point, then writes table.json, table.md and plot.png under a.out.

  `configure(config, point)` edits a point's config before validation; `prepare(point, config)`
  runs before the point trains (e.g. trains the VAE it needs) and `after(point, config,
  workdir)` once it has (e.g. evaluates it at another size); both return extra row values."""
  import jax
  jax.config.update("jax_threefry_partitionable", True)
  configs = {}
  for p in points:
    c = config_for(p, steps=a.steps, eval_num=a.eval_num, eval_points=eval_points, base=a.base,
                   vae_workdir=a.vae_workdir, smoke=a.smoke, full=a.full,
                   sets=parse_sets(a.set), cache_clips=a.cache_clips,
                   cache_dir=os.path.join(a.workdir, "latents") if a.smoke else SHARED_LATENTS)
    c = configure(c, p) if configure else c
    config_lib.validate(c, training=True)   # a bad point fails here, before anything trains
    configs[point_name(p)] = c
  if a.list:
    for name, c in configs.items():
      print(f"{name:40s} {model_facts(c)}")
    return []
  if a.dry_run:
    return dry_run(study, points, configs, a.workdir)
  rows = []
  for p in points:
    extra = prepare(p, configs[point_name(p)]) if prepare else {}
    new = run_point(study, p, configs[point_name(p)], a.workdir, extra)
    if after:
      more = after(p, configs[point_name(p)], os.path.join(a.workdir, study, point_name(p)))
      new = [{**r, **more} for r in new]
    rows += new
    print(json.dumps(rows[-1]), flush=True)
  out = a.out or os.path.join("experiments", "results", study + ("_full" if a.full else ""))
  os.makedirs(out, exist_ok=True)
  axes = sorted({k for p in points for k in p})
  write_table(out, rows, table_md(rows, axes, note))
  plot(rows, x, series, os.path.join(out, "plot.png"), title)
  with open(os.path.join(out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  return rows

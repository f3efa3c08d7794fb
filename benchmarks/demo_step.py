"""Where the demo recipe's DiT step spends its time: the real train step of a configs/demo.py
stage, split into data, forward, gradient and the loop, plus (--trace) the hottest XLA ops from a
JAX profiler trace.

  python benchmarks/demo_step.py [--stage t2v_detail2] [--steps 30] [--trace 10] \
      [--vae sora_jax/assets/demo/vae] [--cache_clips 256] [--set model.dtype=bfloat16 ...]

The DiT starts from random weights (timing does not depend on them); its latents come from a
small cache encoded by the shipped VAE into --cache_dir (built once, ~20 s for 256 clips).
`benchmarks/dit_step.py --variants demo` times the DiT alone; this times everything the recipe's
step does (text encoder, layout readout and prior, frame tasks, AdamW, EMA, the data iterator).
Figures: benchmarks/RESULTS.md (issue 13, session 42).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from dit_step import median_time  # noqa: E402  (benchmarks/ is this script's directory)
from configs import demo  # noqa: E402
from sora_jax.train import loop  # noqa: E402
from sora_jax.train import steps as steps_lib  # noqa: E402


def stage_config(a):
  cfg = demo.get_config(f"stage={a.stage}").unlock()
  cfg.vae_workdir, cfg.train.init_from = a.vae, ""
  cfg.data.cache_dir, cfg.data.cache_clips = a.cache_dir, a.cache_clips
  cfg.train.eval_every = cfg.train.sample_every = 0
  for item in a.set:
    key, value = item.split("=", 1)
    section, name = key.split(".")
    old = cfg[section][name]
    cfg[section][name] = (value in ("1", "true", "True") if isinstance(old, bool)
                          else type(old)(value))
  return cfg.lock()


def hottest_ops(trainer, state, batch, steps: int, top: int = 15) -> list[tuple[float, str]]:
  """(ms per step, op) of the XLA ops that took longest over `steps` traced steps."""
  from jax._src.lib import _profile_data
  trace_dir = tempfile.mkdtemp(prefix="demo_step_trace_")
  jax.profiler.start_trace(trace_dir)
  for i in range(steps):
    state, metrics = trainer.step_fn(state, batch, steps_lib.step_rng(0, i))
  jax.block_until_ready(metrics)
  jax.profiler.stop_trace()
  total = collections.Counter()
  for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
    for plane in _profile_data.ProfileData.from_file(path).planes:
      for line in plane.lines:
        if line.name.startswith("tf_XLA"):   # XLA's compute threads, not Python
          for ev in line.events:
            if not ev.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
              total[ev.name] += ev.duration_ns
  shutil.rmtree(trace_dir, ignore_errors=True)
  return [(ns / 1e6 / steps, name) for name, ns in total.most_common(top)]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--stage", default=demo.RECIPE_STAGES[-1])
  ap.add_argument("--vae", default="sora_jax/assets/demo/vae")
  ap.add_argument("--cache_dir", default="workdirs/bench_demo_step")
  ap.add_argument("--cache_clips", type=int, default=256)
  ap.add_argument("--steps", type=int, default=30, help="timed calls per row (median)")
  ap.add_argument("--trace", type=int, default=0, help="also trace this many steps")
  ap.add_argument("--set", action="append", default=[], help="config override SECTION.KEY=VALUE")
  a = ap.parse_args()
  workdir = tempfile.mkdtemp(prefix="demo_step_run_")
  trainer = loop.Trainer(stage_config(a), workdir, overwrite=True)
  state = trainer.setup()
  recipe = trainer.recipe
  with trainer._context():
    batch = trainer._next_batch()
    rng = steps_lib.step_rng(0, 0)
    t_data = median_time(trainer._next_batch, 0, a.steps) * 1e3
    loss = jax.jit(lambda p, b, r: recipe.loss(p, b, r, jnp.int32(0))[0])
    grad = jax.jit(jax.grad(lambda p, b, r: recipe.loss(p, b, r, jnp.int32(0))[0]))
    params = state.params
    jax.block_until_ready((loss(params, batch, rng), grad(params, batch, rng)))
    t_loss = median_time(lambda: loss(params, batch, rng), 0, a.steps) * 1e3
    t_grad = median_time(lambda: grad(params, batch, rng), 0, a.steps) * 1e3
    holder = [state]

    def run(n):
      t = time.perf_counter()
      for i in range(n):
        holder[0], metrics = trainer.step_fn(holder[0], trainer._next_batch(),
                                             steps_lib.step_rng(0, i))
      jax.block_until_ready(metrics)
      return (time.perf_counter() - t) / n * 1e3
    run(3)
    t_loop = run(a.steps)
    ops = hottest_ops(trainer, holder[0], batch, a.trace) if a.trace else []
  trainer.close()
  shutil.rmtree(workdir, ignore_errors=True)
  b = int(trainer.config.data.batch_size)
  print(f"stage {a.stage}, batch {b}, {jax.devices()[0].device_kind}, overrides {a.set or 'none'}")
  print("| what | ms | clips/s |\n|---|---:|---:|")
  for name, ms in (("next batch", t_data), ("loss (forward)", t_loss),
                   ("loss and gradient", t_grad), ("train loop step (data + step)", t_loop)):
    print(f"| {name} | {ms:.1f} | {b / ms * 1e3:.1f} |")
  print(f"steps/s in the loop: {1e3 / t_loop:.2f}; compile {trainer.facts['compile_s']:.1f} s")
  for ms, name in ops:
    print(f"  {ms:7.2f} ms/step  {name}")


if __name__ == "__main__":
  main()

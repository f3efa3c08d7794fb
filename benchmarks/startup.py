"""Seconds from process start to the end of training step 1, cold and warm compilation cache.

    python benchmarks/startup.py                         # configs/t2v.py:runlocal, 1 round
    python benchmarks/startup.py --rounds=2 --tree=/path/to/other/checkout   # compare a tree

Each round runs `sora-jax train` in a subprocess twice: once with a fresh, empty compilation
cache (cold) and once more with the cache that run filled (warm), each in a fresh workdir. The
train loop logs "first step done after X s (phase s, ...)", measured from process start; the
subprocess is stopped there (its later samples and evals are not what this measures); its CPU
seconds up to then are reported too, a figure the machine's other load disturbs less. A tree
without the persistent cache shows cold ≈ warm.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

LINE = re.compile(r"first step done after ([\d.]+) s \((.*)\)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(tree: str, config: str, cache_dir: str, extra: list[str], timeout: float) -> dict:
  workdir = tempfile.mkdtemp(prefix="startup_wd_")
  env = dict(os.environ, SORA_JAX_COMPILE_CACHE=cache_dir,
             PYTHONPATH=os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")]))
  # A cache the user set for jax would be shared by cold and warm runs: not this benchmark's.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cmd = [sys.executable, "-m", "sora_jax.cli", "train", f"--config={config}",
         f"--workdir={workdir}", *extra]
  load = os.getloadavg()[0]
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  found, tail, cpu = None, [], float("nan")
  try:
    for line in proc.stdout:
      tail = (tail + [line])[-30:]
      m = LINE.search(line)
      if m:
        found = m
        break
      if time.time() - t0 > timeout:
        break
  finally:
    proc.kill()
    _, _, usage = os.wait4(proc.pid, 0)  # killed right after step 1: its CPU time up to there
    proc.returncode = -9
    cpu = usage.ru_utime + usage.ru_stime
    shutil.rmtree(workdir, ignore_errors=True)
  if found is None:
    raise RuntimeError(f"no 'first step done' line from {' '.join(cmd)}:\n{''.join(tail)}")
  phases = {}
  for part in found.group(2).split(", "):
    name, _, value = part.rpartition(" ")
    phases[name] = float(value)
  return {"first_step_s": float(found.group(1)), "phases": phases, "load": load,
          "cpu_s": cpu, "wall_s": time.time() - t0}


def cache_size(path: str) -> tuple[int, int]:
  files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
  return len(files), sum(os.path.getsize(f) for f in files)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default="configs/t2v.py:runlocal")
  ap.add_argument("--tree", default=ROOT, help="the checkout to run (its sora_jax)")
  ap.add_argument("--rounds", type=int, default=1, help="cold+warm pairs")
  ap.add_argument("--warm_runs", type=int, default=1, help="warm runs per round")
  ap.add_argument("--timeout", type=float, default=900.0)
  ap.add_argument("extra", nargs="*", help="more flags for `train`, e.g. --config.seed=1")
  args = ap.parse_args(argv)
  rows = []
  for r in range(args.rounds):
    cache = tempfile.mkdtemp(prefix="startup_cache_")
    try:
      for kind in ["cold"] + ["warm"] * args.warm_runs:
        res = run_once(args.tree, args.config, cache, args.extra, args.timeout)
        n, size = cache_size(cache)
        rows.append((r, kind, res, n, size))
        print(f"round {r} {kind}: first step after {res['first_step_s']:.1f} s "
              f"(load {res['load']:.1f}; cache {n} files, {size / 2**20:.1f} MiB)", flush=True)
    finally:
      shutil.rmtree(cache, ignore_errors=True)
  names = list(dict.fromkeys(k for _, _, res, _, _ in rows for k in res["phases"]))
  print(f"\ntree {args.tree}, config {args.config} {' '.join(args.extra)}")
  print("| round | cache | load | first step (s) | CPU (s) | " + " | ".join(names) + " |")
  print("|---|---|---:|---:|---:|" + "---:|" * len(names))
  for r, kind, res, _, _ in rows:
    cells = " | ".join(f"{res['phases'].get(k, float('nan')):.1f}" for k in names)
    print(f"| {r} | {kind} | {res['load']:.1f} | {res['first_step_s']:.1f} | "
          f"{res['cpu_s']:.0f} | {cells} |")


if __name__ == "__main__":
  main()

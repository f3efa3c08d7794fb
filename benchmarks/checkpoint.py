"""Seconds per synchronous checkpoint save on one CPU process: orbax's replica-parallel default
against writing each array whole (what `sora_jax.checkpoint` does on a one-process CPU run).

    python benchmarks/checkpoint.py                      # runlocal and demo DiT, 1 and 8 devices
    python benchmarks/checkpoint.py --devices 8 --configs "t2v:runlocal,res=32,frames=9"

The saved tree is a train state's shape: the DiT's parameters four times over (parameters, Adam's
two moments, EMA), replicated over a data-parallel mesh of fake CPU devices, as a data=N run
holds it. Each row is the median of --saves saves (after one warm-up save) of
`Checkpointer.save`, the path the train loop takes.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("t2v:runlocal,res=32,frames=9", "demo:stage=t2v")   # configs/<module>.py:<arg>


def measure(config_arg: str, replica_parallel: bool, saves: int) -> dict:
  """Runs in a process whose device count XLA_FLAGS already fixed."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from sora_jax import checkpoint as ckpt_lib
  from sora_jax import runs
  module, _, arg = config_arg.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  system = runs.t2v_system(config, abstract=True)
  shapes = jax.eval_shape(system.init, jax.random.key(0), system.example_batch())
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.tree.map(lambda s: jax.device_put(np.ones(s.shape, s.dtype), replicated),
                        runs.unbox(shapes))
  state = {"params": params, "mu": params, "nu": params, "ema_params": params}
  with tempfile.TemporaryDirectory() as workdir:
    ckpt = ckpt_lib.Checkpointer(workdir, keep=2, async_save=False)
    if replica_parallel:   # orbax's own default handler, as before sora_jax chose
      ocp.type_handlers.register_type_handler(
          jax.Array, ocp.type_handlers.ArrayHandler(), override=True)
    times = []
    for step in range(saves + 1):
      t0 = time.perf_counter()
      ckpt.save(step, state, force=True)
      ckpt.wait()
      times.append(time.perf_counter() - t0)
    ckpt.close()
  n = sum(x.size for x in jax.tree.leaves(params))
  return {"config": config_arg, "devices": jax.device_count(), "params": int(n),
          "replica_parallel": replica_parallel, "save_s": statistics.median(times[1:])}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--configs", default=";".join(CONFIGS),
                  help="';'-separated <configs module>:<argument>")
  ap.add_argument("--devices", default="1,8", help="fake CPU device counts")
  ap.add_argument("--saves", type=int, default=5)
  ap.add_argument("--json", action="store_true", help="one JSON line per row")
  ap.add_argument("--_row", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args._row:   # the child: one (config, mode) in a process with the device count set
    config_arg, mode = args._row.rsplit("|", 1)
    print(json.dumps(measure(config_arg, mode == "replica_parallel", args.saves)))
    return
  rows = []
  for config_arg in args.configs.split(";"):
    for devices in (int(d) for d in args.devices.split(",")):
      for mode in ("replica_parallel", "whole"):
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        out = subprocess.run([sys.executable, __file__, f"--_row={config_arg}|{mode}",
                              f"--saves={args.saves}"], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]) if args.json else
              f"{config_arg:28s} {devices:>2d} dev  {rows[-1]['params']:>10,d} params  "
              f"{mode:16s} {rows[-1]['save_s']:.3f} s/save", flush=True)


if __name__ == "__main__":
  main()

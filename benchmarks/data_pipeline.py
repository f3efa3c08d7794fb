"""Input-pipeline throughput: clips/s of the grain pipeline, per source, size and worker count.

  python benchmarks/data_pipeline.py                      # procedural + tfds, 17x64x64 and 65x256x256
  python benchmarks/data_pipeline.py --sizes=17x64x64 --batches=10 --workers=0,2

The tfds rows prepare a small shapes_world (`--tfds_examples` train clips per size) under
`--data_dir` first (reused when already there); `--no_tfds` skips them. The first batch, which
includes worker start-up, is excluded from the timing. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from absl import flags

from configs.common import data_config
from sora_jax.data import builders, pipeline


def measure(cfg, batches: int) -> tuple[float, float]:
  """(clips/s after the first batch, seconds to the first batch)."""
  t0 = time.perf_counter()
  it = pipeline.make_iterator(cfg, cfg.split, seed=0)
  next(it)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  del it
  return batches * cfg.batch_size / dt, first


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sizes", default="17x64x64,65x256x256", help="comma-separated TxHxW")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=4, help="timed batches per row")
  p.add_argument("--workers", default="0,2", help="comma-separated grain worker counts")
  p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "sora_jax_bench_tfds"))
  p.add_argument("--tfds_examples", type=int, default=16)
  p.add_argument("--no_tfds", action="store_true")
  args = p.parse_args(argv)
  flags.FLAGS.mark_as_parsed()      # grain's worker processes read absl flags

  print(f"# data pipeline throughput ({os.cpu_count()} CPUs visible, batch {args.batch}, "
        f"{args.batches} timed batches after the first)\n")
  print("| clip (TxHxW) | source | workers | clips/s | first batch (s) |")
  print("|---|---|---:|---:|---:|")
  for size in args.sizes.split(","):
    t, h, w = (int(v) for v in size.split("x"))
    sources = ["procedural"] + ([] if args.no_tfds else ["tfds"])
    for source in sources:
      cfg = data_config(frames=t, height=h, width=w, batch_size=args.batch)
      if source == "tfds":
        cfg.source, cfg.data_dir = "tfds", args.data_dir
        cfg.builder_config = f"{size}-n{args.tfds_examples}"
        t0 = time.perf_counter()
        builders.prepare(cfg)
        print(f"<!-- prepared {cfg.builder_config} in {time.perf_counter() - t0:.1f}s -->",
              file=sys.stderr)
      for workers in (int(v) for v in args.workers.split(",")):
        cfg.num_workers = workers
        rate, first = measure(cfg, args.batches)
        print(f"| {size} | {source} | {workers} | {rate:.1f} | {first:.1f} |", flush=True)


if __name__ == "__main__":
  main()

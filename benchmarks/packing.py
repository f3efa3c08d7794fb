"""Packing vs bucketing vs padding on one size mix: padding waste and useful tokens/s of the
REAL t2v train step (issue 14).

  python benchmarks/packing.py [--mix demo] [--budget 320] [--rows 4] [--steps 5] [--clips 1024]

The mix is configs/demo.py's MIX (square, 16:9, 9:16, twice the duration, still images) on the
demo DiT (Ti, depth 6, patch 1x2x2, 4x8x8x16 latents, jointly trained text encoder); the latents
are random (the VAE's cost is the cache's, paid once). Three ways to feed the same clips:

  packed   rows of --budget tokens, several clips per row (best-fit, data/packing.py), one
           compiled step; attention masked by segment ids.
  padded   one clip per row, every row padded to the largest clip's tokens, one compiled step.
  bucketed one size per batch, unpadded, --rows x budget tokens per batch as near as the size
           allows; one compiled step PER SIZE (unpacked path).

Waste = padding tokens / all tokens over --clips clips drawn from the mix (the packer really
runs). Throughput = median step time over --steps after warm-up; "useful tokens/s" counts real
(non-padding) tokens only; bucketed is the mix-weighted mean of its sizes. Run it on a quiet box:
two cores shared with anything else halve every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import demo as demo_config  # noqa: E402
from sora_jax import runs  # noqa: E402
from sora_jax.data import builders, packing  # noqa: E402
from sora_jax.models import patching  # noqa: E402
from sora_jax.train import state as state_lib  # noqa: E402
from sora_jax.train import steps as steps_lib  # noqa: E402
from sora_jax.train.optimizer import make_optimizer  # noqa: E402
from sora_jax.train.t2v_training import T2VTraining  # noqa: E402


def make_recipe(a, pack_clips: int):
  c = demo_config.get_config("stage=t2v,mix=1").unlock()
  c.data.pack_tokens, c.data.pack_clips, c.data.batch_size = a.budget, pack_clips, a.rows
  c.diffusion.latent_scale = 1.0
  return c, T2VTraining(c, runs.t2v_system(c, abstract=True))


def mix_clips(config, n: int, system, seed: int = 0):
  """n cached-clip stand-ins drawn from the mix as the procedural source draws them."""
  sizes = packing.parse_sizes(config.data.sizes)
  r = np.random.RandomState(seed)
  tokens, mask = system.encode_prompts(["a red circle bounces to the right"])
  out = []
  for i in range(n):
    size = packing.pick_size(sizes, builders.clip_seed("train", i))
    lat = r.randn(*system.vae.latent_shape(*size.shape)).astype(np.float32)
    out.append({"latents": lat, "tokens": tokens[0], "text_mask": mask[0], "size": str(size)})
  return out


def packed_batches(config, recipe, clips, rows: int):
  budget, slots = recipe.packing_layout()
  ds = packing.make_packed_dataset(
      clips, patchify=lambda lat: patching.patchify_clip(lat, config.model.patch),
      token_budget=budget, slots=slots, text_len=config.text.max_len, rows_per_batch=rows,
      seed=0, process_index=0, process_count=1)
  it = iter(ds)
  n_batches = max(1, sum(recipe.system.num_tokens(c["latents"].shape) for c in clips)
                  // (budget * rows))
  return [next(it) for _ in range(n_batches)]


def time_step(recipe, config, batch, a) -> tuple[float, float]:
  """(compile s, median step s) of the real train step on `batch`."""
  batch = jax.tree.map(jnp.asarray, batch)
  boxed = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  tx, sched = make_optimizer(config.optim, int(config.train.steps), boxed, players=None)
  state = jax.jit(lambda r, b: state_lib.unbox(state_lib.make_init_fn(recipe, tx)(r, b)))(
      jax.random.key(0), batch)
  step = jax.jit(steps_lib.make_train_step(recipe, tx, sched, float(config.optim.ema_decay)),
                 donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    state, m = compiled(state, batch, jax.random.key(i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return compile_s, statistics.median(times[a.warmup:])


def unpacked_batch(system, latent_shape, n: int, rng):
  L = int(system.config.text.max_len)
  tokens, mask = system.encode_prompts(["a red circle bounces to the right"] * n)
  return {"latents": rng.randn(n, *latent_shape).astype(np.float32),
          "tokens": tokens[:, :L], "text_mask": mask[:, :L]}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--budget", type=int, default=320)
  ap.add_argument("--rows", type=int, default=4)
  ap.add_argument("--clips", type=int, default=1024)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--pack_clips", type=int, default=4, help="caption slots per packed row")
  ap.add_argument("--only", default="", help="comma list of layouts to run (default: all)")
  ap.add_argument("--json", action="store_true")
  a = ap.parse_args()
  config, recipe = make_recipe(a, pack_clips=a.pack_clips)
  run = lambda layout: not a.only or layout in a.only.split(",")  # noqa: E731
  system = recipe.system
  clips = mix_clips(config, a.clips, system)
  counts = np.asarray([system.num_tokens(c["latents"].shape) for c in clips])
  sizes = packing.parse_sizes(config.data.sizes)
  rows = []

  # packed: the real packer over the clips, then the step on one of its batches
  share = {str(s): float(np.mean([c["size"] == str(s) for c in clips])) for s in sizes}
  per_size = {}
  batches = packed_batches(config, recipe, clips, a.rows) if run("packed") else []
  if batches:
    fill = float(np.mean([np.mean(b["segment_ids"] > 0) for b in batches]))
    comp, t = time_step(recipe, config, batches[0], a)
    real = fill * a.budget * a.rows
    rows.append(dict(layout="packed", tokens_per_row=a.budget, rows=a.rows, waste=1 - fill,
                     compiled_steps=1, compile_s=comp, step_ms=1e3 * t,
                     useful_tokens_per_s=real / t, clips_per_s=real / counts.mean() / t,
                     clips_per_row=a.pack_clips))

  # padded: one clip per row, rows of the largest clip's tokens (pack_clips=1)
  if run("padded"):
    rows.append(padded_row(a, clips, counts))
  if run("bucketed"):
    rows.append(bucketed_row(a, config, recipe, system, clips, sizes, share, per_size))
  report(a, config, counts, share, rows, per_size)


def padded_row(a, clips, counts):
  biggest = int(counts.max())
  pad_rows = max(1, round(a.budget * a.rows / biggest))
  pcfg, precipe = make_recipe(argparse.Namespace(**{**vars(a), "budget": biggest,
                                                    "rows": pad_rows}), pack_clips=1)
  pb = packed_batches(pcfg, precipe, clips[:pad_rows * 8], pad_rows)
  pfill = float(np.mean(counts) / biggest)
  comp, t = time_step(precipe, pcfg, pb[0], a)
  real = float(np.mean([np.sum(b["segment_ids"] > 0) for b in pb]))
  return dict(layout="padded", tokens_per_row=biggest, rows=pad_rows, waste=1 - pfill,
              compiled_steps=1, compile_s=comp, step_ms=1e3 * t, useful_tokens_per_s=real / t,
              clips_per_s=pad_rows / t)


def bucketed_row(a, config, recipe, system, clips, sizes, share, per_size):
  """One size per batch, its own compiled step; the mix-weighted mean over sizes."""
  rng = np.random.RandomState(0)
  total_comp, time_per_clip, tokens_per_clip = 0.0, 0.0, 0.0
  for s in sizes:
    lat = system.vae.latent_shape(*s.shape)
    n_tok = system.num_tokens(lat)
    n = max(1, round(a.budget * a.rows / n_tok))
    comp, t = time_step(recipe, config, unpacked_batch(system, lat, n, rng), a)
    total_comp += comp
    time_per_clip += share[str(s)] * t / n
    tokens_per_clip += share[str(s)] * n_tok
    per_size[str(s)] = dict(batch=n, tokens=n_tok, step_ms=1e3 * t, tokens_per_s=n * n_tok / t)
  return dict(layout="bucketed", tokens_per_row=None, rows=None, waste=0.0,
              compiled_steps=len(sizes), compile_s=total_comp, step_ms=None,
              useful_tokens_per_s=tokens_per_clip / time_per_clip, clips_per_s=1 / time_per_clip,
              per_size=per_size)


def report(a, config, counts, share, rows, per_size):
  if a.json:
    for r in rows:
      print(json.dumps(r))
  print(f"mix {config.data.sizes}: {a.clips} clips, tokens per clip mean {counts.mean():.1f}, "
        f"max {counts.max()}; shares {share}")
  print("| layout | row tokens x rows | padding waste | compiled steps | compile s | step ms | "
        "useful tokens/s | clips/s |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    shape = f"{r['tokens_per_row']} x {r['rows']}" if r["rows"] else "per size"
    step = f"{r['step_ms']:.0f}" if r["step_ms"] else "-"
    print(f"| {r['layout']} | {shape} | {100 * r['waste']:.1f} % | {r['compiled_steps']} | "
          f"{r['compile_s']:.1f} | {step} | {r['useful_tokens_per_s']:.0f} | "
          f"{r['clips_per_s']:.1f} |")
  for name, s in per_size.items():
    print(f"  bucket {name}: batch {s['batch']} x {s['tokens']} tokens, {s['step_ms']:.0f} ms, "
          f"{s['tokens_per_s']:.0f} tokens/s")


if __name__ == "__main__":
  main()

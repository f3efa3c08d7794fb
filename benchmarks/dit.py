"""DiT train-step and sampling throughput (tokens/s) and achieved FLOP rate.

  python benchmarks/dit.py [--variants S/1x2x2,B/1x2x2] [--batch 8] [--latent 5x16x16x8]

The train step is the real one (`train/steps.py`: flow loss, AdamW, EMA) on text-conditioned
latents; sampling is one Euler step of the compiled `lax.scan` sampler with CFG (2x batch).
FLOPs come from the analytic formula (`eval/flops.py`, checked against XLA's count), since XLA's
cost analysis counts a scanned layer stack once; train = 3x forward (forward + backward).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from configs import t2v as t2v_config
from sora_jax.diffusion import samplers
from sora_jax.diffusion.objective import make_objective
from sora_jax.eval import flops
from sora_jax.models import dit as dit_lib
from sora_jax.train import optimizer as optim_lib
from sora_jax.train import state as state_lib
from sora_jax.train import steps as steps_lib

from _latent_task import LatentT2VTask


def bench(variant: str, batch: int, latent: tuple[int, ...], ctx_len: int, text_width: int,
          repeat: int) -> dict:
  name, patch = variant.split("/")
  cfg = t2v_config.get_config(f"variant={name},patch={patch}")
  model = dit_lib.dit_from_config(cfg.model, in_channels=latent[-1], text_width=text_width)
  pt, ph, pw = cfg.model.patch
  tokens = (latent[0] // pt) * (latent[1] // ph) * (latent[2] // pw)
  obj = make_objective(cfg.diffusion)
  task = LatentT2VTask(model, obj, tokens)
  k = jax.random.split(jax.random.key(0), 3)
  data = {"latents": jax.random.normal(k[0], (batch, *latent)),
          "context": jax.random.normal(k[1], (batch, ctx_len, text_width)),
          "mask": jnp.ones((batch, ctx_len), bool)}
  tx, sched = optim_lib.make_optimizer(mlc.ConfigDict(dict(cfg.optim)), 1000,
                                       jax.eval_shape(task.init, k[2], data))
  state = jax.jit(lambda r, b: state_lib.unbox(state_lib.make_init_fn(task, tx)(r, b)))(k[2], data)
  step = jax.jit(steps_lib.make_train_step(task, tx, sched, 0.999), donate_argnums=0)
  t0 = time.perf_counter()
  state, m = step(state, data, k[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(repeat):
    state, m = step(state, data, jax.random.key(i))
  jax.block_until_ready(m)
  train_s = (time.perf_counter() - t0) / repeat

  @jax.jit
  def one_step_sample(params, noise, ctx, mask):
    return samplers.sample(task.fn(params), noise, cond=(ctx, mask), uncond=(ctx, mask),
                           num_steps=1, guidance_scale=4.0, shift=3.0)
  args = (state.ema_params, data["latents"], data["context"], data["mask"])
  jax.block_until_ready(one_step_sample(*args))
  t0 = time.perf_counter()
  for _ in range(repeat):
    jax.block_until_ready(one_step_sample(*args))
  sample_s = (time.perf_counter() - t0) / repeat
  macs = flops.forward_macs_formula(cfg.model, tokens, ctx_len, in_channels=latent[-1],
                                    text_width=text_width)
  params = state_lib.param_count(state.params)
  return dict(model=variant, params=params, tokens=tokens, batch=batch, compile_s=compile_s,
              train_s=train_s, train_tok_s=batch * tokens / train_s,
              train_gflops=3 * 2 * macs * batch / train_s / 1e9,
              sample_step_s=sample_s, sample_tok_s=2 * batch * tokens / sample_s,
              sample_gflops=2 * 2 * macs * batch / sample_s / 1e9)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", default="S/1x2x2,B/1x2x2")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--latent", default="5x16x16x8", help="T x H x W x C latent (17x128x128 video)")
  ap.add_argument("--context", type=int, default=64)
  ap.add_argument("--text_width", type=int, default=128)
  ap.add_argument("--repeat", type=int, default=3)
  a = ap.parse_args()
  latent = tuple(int(v) for v in a.latent.split("x"))
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, latent {latent}, "
        f"{a.context} text tokens")
  cols = ["model", "params", "tokens", "batch", "compile_s", "train_s", "train_tok_s",
          "train_gflops", "sample_step_s", "sample_tok_s", "sample_gflops"]
  print(" | ".join(cols))
  for v in a.variants.split(","):
    r = bench(v, a.batch, latent, a.context, a.text_width, a.repeat)
    print(" | ".join(f"{r[c]:,.2f}" if isinstance(r[c], float) else f"{r[c]:,}"
                     if isinstance(r[c], int) else str(r[c]) for c in cols), flush=True)


if __name__ == "__main__":
  main()

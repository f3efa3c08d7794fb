"""VAE encode/decode throughput and memory against clip length, one pass vs chunked.

  python benchmarks/vae.py [--frames 17,65,257] [--res 64] [--chunk 2] [--config stage=vae]

Memory is XLA's own account of the compiled function (`memory_analysis()`: arguments + outputs +
temporaries, per device); for chunked inference it is the steady-state chunk step, the largest
program that runs. Peak memory must stay flat with chunking while one pass grows with length.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import demo
from sora_jax.models import vae_chunked
from sora_jax.models.vae import VAE, vae_from_config


def mib(compiled) -> float:
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes) / 2**20


def timed(fn, *args, repeat=2):
  jax.block_until_ready(fn(*args))  # compile / warm up
  t = time.perf_counter()
  for _ in range(repeat):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t) / repeat


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--frames", default="17,65,257")
  ap.add_argument("--res", type=int, default=64)
  ap.add_argument("--chunk", type=int, default=2, help="latent frames per chunk")
  ap.add_argument("--config", default="stage=vae", help="configs/demo.py argument")
  args = ap.parse_args()
  cfg = demo.get_config(args.config)
  vae = vae_from_config(cfg.vae)
  r = args.res
  x1 = jnp.zeros((1, 1, r, r, 3))
  params = jax.tree.map(lambda p: p.unbox() if hasattr(p, "unbox") else p,
                        jax.jit(vae.init)(jax.random.key(0), x1)["params"],
                        is_leaf=lambda p: hasattr(p, "unbox"))
  enc = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=VAE.encode)[0])
  dec = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=VAE.decode))
  tc = cfg.vae.temporal_compression
  chunk_frames = tc * args.chunk
  print(f"VAE {cfg.vae.temporal_compression}x{cfg.vae.spatial_compression}x"
        f"{cfg.vae.spatial_compression}, ch={cfg.vae.channels}, patch={cfg.vae.patch_size}, "
        f"{r}x{r}, batch 1, {jax.devices()[0].platform}, chunk={args.chunk} latent frames")
  print(f"{'frames':>6} | {'mode':<8} | {'encode clips/s':>14} | {'decode clips/s':>14} | "
        f"{'enc MiB':>8} | {'dec MiB':>8}")
  for frames in (int(f) for f in args.frames.split(",")):
    x = jax.random.uniform(jax.random.key(1), (1, frames, r, r, 3), minval=-1, maxval=1)
    z = enc(params, x)
    te, td = timed(enc, params, x), timed(dec, params, z)
    me = mib(enc.lower(params, x).compile())
    md = mib(dec.lower(params, z).compile())
    print(f"{frames:>6} | {'one-pass':<8} | {1 / te:>14.3f} | {1 / td:>14.3f} | {me:>8.0f} | "
          f"{md:>8.0f}")
    ce = lambda p, v: vae_chunked.encode_chunked(vae, p, v, args.chunk)[0]  # noqa: E731
    cd = lambda p, w: vae_chunked.decode_chunked(vae, p, w, args.chunk)  # noqa: E731
    zc = ce(params, x)
    err = float(jnp.max(jnp.abs(zc - z)))
    te, td = timed(ce, params, x), timed(cd, params, z)
    # Steady-state chunk programs (with a cache), the largest ones that run.
    _, _, cache = vae_chunked._encode_step(vae, params, None, x[:, :1])
    me = mib(vae_chunked._encode_step.lower(vae, params, cache,
                                            x[:, 1:1 + chunk_frames]).compile())
    _, dcache = vae_chunked.decode_step(vae, params, None, z[:, :1])
    md = mib(vae_chunked.decode_step.lower(vae, params, dcache,
                                            z[:, 1:1 + args.chunk]).compile())
    print(f"{frames:>6} | {'chunked':<8} | {1 / te:>14.3f} | {1 / td:>14.3f} | {me:>8.0f} | "
          f"{md:>8.0f}   (max |chunked - one pass| latent = {err:.1e})")


if __name__ == "__main__":
  main()

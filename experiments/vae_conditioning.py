"""Study: why a VAE on the procedural world stalls at the mean-colour plateau, and what fixes it.

  python experiments/vae_conditioning.py [--clips 512] [--steps 1000] [--out results/vae_conditioning]

The procedural world's pixels are dominated by one dark background colour per clip; the texture
and the small objects carry little variance. Gradient methods learn the directions of a linear
map at speeds proportional to their variance, so an autoencoder learns the mean colour at once
and the rest very slowly. This study isolates that from the network: a *linear* autoencoder of
4x8x8 spacetime patches (the VAE's compression, 16 latent channels) against its closed-form
optimum (PCA), trained with AdamW and with Muon (orthogonalised updates, which move every
singular direction at the same speed). It writes metrics.json with test PSNRs at a few steps.
"""
from __future__ import annotations

import argparse
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax.data import world
from sora_jax.train import optimizer as optim_lib


def clips(n: int, frames: int, split: str) -> np.ndarray:
  video = np.stack([world.generate_clip(i, frames, 64, 64, split=split)["video"]
                    for i in range(n)])
  return video.astype(np.float32) / 127.5 - 1.0


def patches(video: np.ndarray, pt: int = 4, p: int = 8) -> np.ndarray:
  """[N, 1+pt*k, H, W, 3] -> [M, pt*p*p*3] spacetime patches (frame 0 dropped: it is alone)."""
  v = video[:, 1:]
  n, t, h, w, c = v.shape
  v = v.reshape(n, t // pt, pt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return v.reshape(-1, pt * p * p * c)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
  return float(10 * np.log10(4.0 / np.mean((np.clip(x, -1, 1) - y) ** 2)))


def pca_psnr(train: np.ndarray, test: np.ndarray, k: int) -> float:
  mu = train.mean(0)
  _, _, vt = np.linalg.svd(train - mu, full_matrices=False)
  return psnr((test - mu) @ vt[:k].T @ vt[:k] + mu, test)


class LinearAE(nn.Module):
  latent: int

  @nn.compact
  def __call__(self, x):
    dense = lambda n, name: nn.Dense(  # noqa: E731
        n, name=name, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "mlp")))
    return dense(x.shape[-1], "decode")(dense(self.latent, "encode")(x))


def train_linear(train, test, name: str, steps: int, latent: int, checkpoints) -> dict:
  from configs import common
  cfg = common.optim_config(lr=1e-3, steps=steps, warmup=0, name=name)
  cfg.schedule, cfg.grad_clip = "constant", 0.0
  model = LinearAE(latent)
  params = model.init(jax.random.key(0), train[:1])["params"]
  tx, _ = optim_lib.make_optimizer(cfg, steps, params)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x):
    loss = lambda p: jnp.mean((model.apply({"params": p}, x) - x) ** 2)  # noqa: E731
    g = jax.grad(loss)(params)
    up, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, up), opt

  rng, out = np.random.default_rng(0), {}
  for i in range(1, steps + 1):
    params, opt = step(params, opt, jnp.asarray(train[rng.integers(0, len(train), 512)]))
    if i in checkpoints:
      out[i] = psnr(np.asarray(model.apply({"params": nn.unbox(params)}, test)), test)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--clips", type=int, default=512)
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--latent", type=int, default=16)
  ap.add_argument("--out", default="results/vae_conditioning")
  a = ap.parse_args()
  train, test = patches(clips(a.clips, 9, "train")), patches(clips(32, 17, "test"))
  checkpoints = sorted({s for s in (100, 200, 500, a.steps) if s <= a.steps})
  result = {
      "patch": "4x8x8x3 = 768 values -> %d latent channels" % a.latent,
      "mean_colour_psnr": pca_psnr(train, test, 1),
      "pca_psnr": pca_psnr(train, test, a.latent),
      "linear_ae_psnr": {name: train_linear(train, test, name, a.steps, a.latent, checkpoints)
                         for name in ("adamw", "muon")},
  }
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "metrics.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(f"first principal component (~mean colour): {result['mean_colour_psnr']:.2f} dB")
  print(f"PCA, {a.latent} components (linear optimum):  {result['pca_psnr']:.2f} dB")
  print(f"{'optimizer':<10}" + "".join(f"{f'step {s}':>10}" for s in checkpoints))
  for name, curve in result["linear_ae_psnr"].items():
    print(f"{name:<10}" + "".join(f"{curve[s]:>10.2f}" for s in checkpoints))


if __name__ == "__main__":
  main()

"""Fréchet video distance (Unterthiner et al. 2018) from a LOCAL I3D checkpoint.

FVD compares the Gaussian fits of I3D features of two sets of videos: real clips and generated
ones. It sees overall realism, not whether a video follows its prompt; the world evaluator
(eval/worlds.py) sees prompt adherence and knows nothing of realism, so the two sit side by side
in `sora-jax eval t2v --fvd_weights=PATH`. As in the published protocol, videos are resized to
224 x 224 and scaled to [-1, 1]; features are the I3D logits (400 Kinetics classes) when the
checkpoint has them, else the pooled last block. FVD is biased upwards at small sample sizes
(the covariance of N videos has rank < N): compare only figures with the same N and frames.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models import i3d as i3d_lib

SIZE = 224


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), in float64 through symmetric square roots
  (Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2), which stays real for singular covariances."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)

  def sqrt_psd(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

  r1 = sqrt_psd(s1)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def gaussian_fit(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  feats = np.asarray(feats, np.float64)
  if len(feats) < 2:
    raise ValueError(f"FVD needs at least 2 videos per set, got {len(feats)}")
  return feats.mean(0), np.cov(feats, rowvar=False)


def preprocess(videos: np.ndarray, size: int = SIZE) -> jax.Array:
  """uint8 [B, T, H, W, 3] -> float [B, T, size, size, 3] in [-1, 1] (bilinear resize)."""
  x = jnp.asarray(videos, jnp.float32) / 127.5 - 1.0
  b, t, _, _, c = x.shape
  return jax.image.resize(x, (b, t, size, size, c), "bilinear")


@functools.partial(jax.jit, static_argnames=("size", "key"))
def _features(net: i3d_lib.I3D, videos: jax.Array, size: int, key: str) -> jax.Array:
  # The weights are an argument, not a closure: one compile serves both sets of videos.
  return i3d_lib.features(net, preprocess(videos, size))[key]


def video_features(net: i3d_lib.I3D, videos, *, batch_size: int = 8, size: int = SIZE
                   ) -> np.ndarray:
  """I3D features [N, D] of uint8 videos [N, T, H, W, 3] (all of one shape)."""
  key = "logits" if net.logits is not None else "pool"
  out = []
  videos = np.asarray(videos)
  for i in range(0, len(videos), batch_size):
    chunk = videos[i:i + batch_size]
    pad = batch_size - len(chunk)   # one compiled shape; padded rows dropped
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out.append(np.asarray(_features(net, chunk, size, key))[:batch_size - pad])
  return np.concatenate(out)


def fvd(net: i3d_lib.I3D, real, generated, **kw) -> dict[str, float]:
  """{'fvd', 'num_real', 'num_generated', 'feature'} of two sets of uint8 videos."""
  fr, fg = video_features(net, real, **kw), video_features(net, generated, **kw)
  return {"fvd": frechet_distance(*gaussian_fit(fr), *gaussian_fit(fg)),
          "num_real": len(fr), "num_generated": len(fg),
          "feature": "logits" if net.logits is not None else "pool"}

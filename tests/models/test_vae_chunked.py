"""Chunked inference equals one pass; tiled inference blends correctly and stays close."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import vae_chunked
from sora_jax.models.vae import VAE


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "shortcut"])
def model(request):
  vae = VAE(temporal_compression=4, spatial_compression=8, latent_channels=4, channels=8,
            channel_mult=(1, 1, 1, 1), shortcut=request.param)
  # 29 frames = 8 latent frames: 4 chunks of 2 latent frames.
  x = jax.random.uniform(jax.random.key(0), (1, 29, 16, 16, 3), minval=-1, maxval=1)
  params = nn.unbox(jax.jit(vae.init)(jax.random.key(1), x[:, :1])["params"])
  mean, logvar = vae_chunked.encode(vae, params, x)  # one pass
  return dict(vae=vae, x=x, params=params, mean=mean, logvar=logvar)


def test_chunked_encode_equals_one_pass(model):
  mean, logvar = vae_chunked.encode_chunked(model["vae"], model["params"], model["x"], 2)
  assert mean.shape == model["mean"].shape == (1, 8, 2, 2, 4)
  np.testing.assert_allclose(mean, model["mean"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(logvar, model["logvar"], atol=2e-5, rtol=1e-4)


def test_chunked_decode_equals_one_pass(model):
  vae, params, z = model["vae"], model["params"], model["mean"]
  full = vae_chunked.decode(vae, params, z)
  chunks = list(vae_chunked.iter_decode_chunks(vae, params, z, 2))
  assert [c.shape[1] for c in chunks] == [5, 8, 8, 8]   # frame 0 + 1 group, then 2 groups each
  chunked = jnp.concatenate(chunks, axis=1)
  assert chunked.shape == full.shape == (1, 29, 16, 16, 3)
  np.testing.assert_allclose(chunked, full, atol=5e-5, rtol=1e-4)


def test_chunk_without_cache_would_differ(model):
  """Guards the test above: restarting each chunk from scratch (no cache) is NOT exact."""
  vae, params, x = model["vae"], model["params"], model["x"]
  # Frames 12..20 alone: latents 1, 2 cover the same frames as latents 4, 5 of the whole clip,
  # but without the cached past (frame 12 is padded as if it were the first).
  restarted, _ = vae_chunked.encode(vae, params, x[:, 12:21])
  assert float(jnp.abs(restarted[:, 1:] - model["mean"][:, 4:6]).max()) > 1e-3


def test_tile_blending_is_exact_for_local_functions():
  x = jax.random.normal(jax.random.key(2), (1, 2, 40, 56, 3))
  down = lambda t: (t[:, :, ::4, ::4] * 2, t[:, :, ::4, ::4] + 1)  # noqa: E731
  a, b = vae_chunked._tiled(down, x, 16, 8, 1, 4)
  np.testing.assert_allclose(a, x[:, :, ::4, ::4] * 2, atol=1e-5)
  np.testing.assert_allclose(b, x[:, :, ::4, ::4] + 1, atol=1e-5)
  up = lambda t: jnp.repeat(jnp.repeat(t, 4, 2), 4, 3)  # noqa: E731
  np.testing.assert_allclose(vae_chunked._tiled(up, x, 4, 2, 4, 1), up(x), atol=1e-5)


def _corr(a, b) -> float:
  return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


def test_tiled_model_close_to_full():
  vae = VAE(temporal_compression=1, spatial_compression=8, latent_channels=4, channels=8,
            channel_mult=(1, 1, 1, 1), num_res_blocks=0)
  yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, 64), jnp.linspace(-1, 1, 64), indexing="ij")
  x = jnp.stack([jnp.sin(3 * xx), jnp.cos(2 * yy), xx * yy], -1)[None, None]
  params = nn.unbox(jax.jit(vae.init)(jax.random.key(3), x)["params"])
  full, _ = vae_chunked.encode(vae, params, x)
  same, _ = vae_chunked.encode(vae, params, x, tile=64, overlap=16)  # one tile = one pass
  np.testing.assert_array_equal(same, full)
  tiled, _ = vae_chunked.encode(vae, params, x, tile=48, overlap=32)
  assert tiled.shape == full.shape
  # Per-tile GroupNorm statistics make tiling approximate (~0.45 relative L1 on this random
  # init); a misplaced or mis-weighted tile would drop the correlation towards 0.
  assert _corr(tiled, full) > 0.75
  dec_full = vae_chunked.decode(vae, params, full)
  dec_tiled = vae_chunked.decode(vae, params, full, tile=48, overlap=32)
  assert dec_tiled.shape == dec_full.shape == x.shape
  assert _corr(dec_tiled, dec_full) > 0.75


def test_bad_tile_and_chunk_raise(model):
  with pytest.raises(ValueError, match="vae.tile"):
    vae_chunked.encode(model["vae"], model["params"], model["x"][:, :1], tile=12, overlap=4)
  with pytest.raises(ValueError, match="chunk"):
    vae_chunked.encode_chunked(model["vae"], model["params"], model["x"], 0)

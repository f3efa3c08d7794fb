"""VAE model: causality, image = first frame, shapes for every compression, config errors, bf16."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from sora_jax.models.vae import VAE, latent_shape, validate_vae_config, vae_from_config

TINY = dict(temporal_compression=4, spatial_compression=8, latent_channels=4, channels=8,
            channel_mult=(1, 1, 1, 1))


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "shortcut"])
def tiny(request):
  vae = VAE(**TINY, shortcut=request.param)
  x = jax.random.uniform(jax.random.key(0), (1, 9, 32, 32, 3), minval=-1, maxval=1)
  boxed = jax.jit(vae.init)(jax.random.key(1), x[:, :1])["params"]
  encode = jax.jit(lambda p, v: vae.apply({"params": p}, v, method=VAE.encode))
  decode = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=VAE.decode))
  params = nn.unbox(boxed)
  return dict(vae=vae, x=x, boxed=boxed, params=params, encode=encode, decode=decode,
              mean=encode(params, x)[0])


def test_encode_is_causal_in_time(tiny):
  mean = tiny["mean"]
  assert mean.shape == (1, 3, 4, 4, 4)
  # Frame 5 belongs to latent frame 2 (frames 5..8): latents 0 and 1 must not move at all.
  x2 = tiny["x"].at[:, 5].set(0.3)
  mean2, _ = tiny["encode"](tiny["params"], x2)
  diff = np.abs(np.asarray(mean2 - mean)).max(axis=(0, 2, 3, 4))
  np.testing.assert_array_equal(diff[:2], 0.0)
  assert diff[2] > 1e-3


def test_decode_is_causal_in_time(tiny):
  z = tiny["mean"]
  out = tiny["decode"](tiny["params"], z)
  assert out.shape == (1, 9, 32, 32, 3)
  out2 = tiny["decode"](tiny["params"], z.at[:, 1].add(1.0))
  diff = np.abs(np.asarray(out2 - out)).max(axis=(0, 2, 3, 4))
  np.testing.assert_array_equal(diff[:1], 0.0)   # frame 0 comes from latent 0 alone
  assert diff[1:5].min() > 1e-4                  # frames 1..4 come from latent 1


def test_image_is_a_one_frame_video(tiny):
  image_mean, _ = tiny["encode"](tiny["params"], tiny["x"][:, :1])
  assert image_mean.shape == (1, 1, 4, 4, 4)
  np.testing.assert_allclose(image_mean[:, 0], tiny["mean"][:, 0], atol=1e-5)
  assert tiny["decode"](tiny["params"], image_mean).shape == (1, 1, 32, 32, 3)


def test_params_carry_logical_names(tiny):
  kernel = tiny["boxed"]["encoder"]["conv_in"]["kernel"]
  assert isinstance(kernel, nn.Partitioned)
  assert kernel.names == (None, None, None, "conv_in", "conv_out")
  assert tiny["boxed"]["encoder"]["norm_out"]["scale"].names == ("norm",)


@pytest.mark.parametrize("comp,zc", [((1, 8), 4), ((2, 8), 8), ((4, 8), 8), ((4, 16), 16),
                                     ((4, 8), 16), ((4, 16), 4), ((4, 4), 8)])
def test_shapes_for_every_compression(comp, zc):
  tc, s = comp
  cfg = mlc.ConfigDict(dict(temporal_compression=tc, spatial_compression=s, latent_channels=zc,
                            channels=8, channel_mult=(1,) * (int(np.log2(s)) + 1),
                            num_res_blocks=1, dtype="float32", param_dtype="float32"))
  frames, h, w = 1 + 2 * tc, 32, 48
  validate_vae_config(cfg, frames, h, w)
  vae = vae_from_config(cfg)
  x = jax.ShapeDtypeStruct((2, frames, h, w, 3), jnp.float32)
  variables = jax.eval_shape(vae.init, jax.random.key(0), x)
  x_hat, mean, logvar = jax.eval_shape(lambda v, x: vae.apply(v, x), variables, x)
  assert mean.shape == logvar.shape == (2,) + latent_shape(frames, h, w, cfg)
  assert mean.shape == (2, 3, h // s, w // s, zc)
  assert x_hat.shape == (2, frames, h, w, 3)


def _cfg(**over):
  base = dict(temporal_compression=4, spatial_compression=8, latent_channels=8, channels=64,
              channel_mult=(1, 2, 4, 4), num_res_blocks=1, dtype="float32",
              param_dtype="float32", recon_loss="l1", tile=0, tile_overlap=16, encode_chunk=2)
  base.update(over)
  return mlc.ConfigDict(base)


@pytest.mark.parametrize("over,dims,key", [
    ({}, (17 + 1, 64, 64), "data.frames"),
    ({}, (17, 60, 64), "data.height"),
    ({}, (17, 64, 68), "data.width"),
    ({"temporal_compression": 3}, (17, 64, 64), "vae.temporal_compression"),
    ({"spatial_compression": 32}, (17, 64, 64), "vae.spatial_compression"),
    ({"spatial_compression": 16}, (17, 64, 64), "vae.channel_mult"),
    ({"latent_channels": 0}, (17, 64, 64), "vae.latent_channels"),
    ({"dtype": "float8"}, (17, 64, 64), "vae.dtype"),
    ({"recon_loss": "l3"}, (17, 64, 64), "vae.recon_loss"),
    ({"tile": 36}, (17, 64, 64), "vae.tile"),
    ({"shortcut": True, "channels": 48, "latent_channels": 5}, (17, 64, 64), "vae.shortcut"),
])
def test_validate_names_the_key(over, dims, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    validate_vae_config(_cfg(**over), *dims)


def test_validate_frames_message_lists_valid_counts():
  with pytest.raises(ValueError, match=r"use 1, 5, 9, 13, 17"):
    validate_vae_config(_cfg(), 18, 64, 64)
  validate_vae_config(_cfg(), 17, 64, 64)  # the default is valid


def test_bf16_compute_with_f32_params(tiny):
  vae16 = VAE(**TINY, shortcut=tiny["vae"].shortcut, dtype=jnp.bfloat16,
              param_dtype=jnp.float32)
  boxed16 = jax.eval_shape(vae16.init, jax.random.key(1), tiny["x"][:, :1])["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(boxed16)))
  x_hat, mean, _ = jax.jit(lambda p, x: vae16.apply({"params": p}, x))(tiny["params"], tiny["x"])
  assert mean.dtype == x_hat.dtype == jnp.float32
  assert np.isfinite(np.asarray(x_hat)).all()
  ref = tiny["mean"]
  rel = float(jnp.abs(mean - ref).mean() / jnp.abs(ref).mean())
  assert rel < 0.05, rel


def test_patch_stem_leaving_too_few_levels_for_time_is_named():
  levels = (1, 1)  # patch 4 of 8: one spatial downsample left, but 4x time needs two
  with pytest.raises(ValueError, match="vae.temporal_compression"):
    validate_vae_config(_cfg(patch_size=4, channel_mult=levels), 17, 64, 64)


@pytest.mark.parametrize("patch", [2, 4])
def test_patch_stem_keeps_compression_and_causality(patch):
  s = 8
  levels = max(int(np.log2(s // patch)), 2) + 1  # 4x time needs two levels even with patch 4
  validate_vae_config(_cfg(patch_size=patch, channel_mult=(1,) * levels, shortcut=True),
                      17, 64, 64)
  vae = VAE(temporal_compression=4, spatial_compression=s, latent_channels=4, channels=8,
            channel_mult=(1,) * levels, patch_size=patch, shortcut=True)
  x = jax.random.uniform(jax.random.key(0), (1, 9, 32, 32, 3), minval=-1, maxval=1)
  params = nn.unbox(vae.init(jax.random.key(1), x[:, :1])["params"])
  enc = jax.jit(lambda p, v: vae.apply({"params": p}, v, method=VAE.encode)[0])
  mean = enc(params, x)
  assert mean.shape == (1, 3, 4, 4, 4)
  x_hat = vae.apply({"params": params}, mean, method=VAE.decode)
  assert x_hat.shape == x.shape
  moved = enc(params, x.at[:, 5].set(0.0))
  np.testing.assert_array_equal(np.asarray(moved[:, :2]), np.asarray(mean[:, :2]))
  assert not np.allclose(np.asarray(moved[:, 2]), np.asarray(mean[:, 2]))
  with pytest.raises(ValueError, match="vae.channel_mult"):
    validate_vae_config(_cfg(patch_size=patch), 17, 64, 64)


def test_shortcut_rearrangements_invert_each_other():
  """Downsample's pooling to channels and Upsample's inverse keep frame 0 alone and lose nothing.

  More (DC-AE equivalence, average pooling, the pre-fix layout) in test_vae_shortcut.py.
  """
  from sora_jax.models.vae_blocks import match_channels, pool_to_channels, unpool_from_channels
  x = jax.random.normal(jax.random.key(0), (2, 9, 4, 4, 3))
  pairs = pool_to_channels(x, 1, temporal=True, first_chunk=True)
  assert pairs.shape == (2, 5, 4, 4, 6)
  np.testing.assert_array_equal(pairs[:, 0, ..., 0::2], pairs[:, 0, ..., 1::2])  # frame 0 twice
  np.testing.assert_array_equal(pairs[:, 1, ..., 0::2], x[:, 1])                 # then (1, 2)
  np.testing.assert_array_equal(unpool_from_channels(pairs, 1, True, first_chunk=True), x)
  later = x[:, 1:]  # a later chunk starts at an odd frame and holds whole pairs
  np.testing.assert_array_equal(pool_to_channels(later, 1, True, first_chunk=False), pairs[:, 1:])
  y = jnp.arange(8.0).reshape(1, 1, 1, 1, 8)
  np.testing.assert_array_equal(match_channels(y, 2)[0, 0, 0, 0], [1.5, 5.5])  # group means
  np.testing.assert_array_equal(match_channels(y[..., :2], 4)[0, 0, 0, 0], [0, 0, 1, 1])
  with pytest.raises(ValueError, match="divide"):
    match_channels(y[..., :3], 4)


def test_space_to_depth_round_trip():
  from sora_jax.models.vae_blocks import depth_to_space, space_to_depth
  x = jax.random.normal(jax.random.key(0), (2, 3, 8, 12, 3))
  y = space_to_depth(x, 2)
  assert y.shape == (2, 3, 4, 6, 12)
  np.testing.assert_array_equal(np.asarray(depth_to_space(y, 2)), np.asarray(x))
  # Each output pixel holds one 2x2 input patch.
  np.testing.assert_array_equal(np.asarray(y[0, 0, 1, 2, :3]), np.asarray(x[0, 0, 2, 4]))

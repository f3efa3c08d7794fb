"""DC-AE non-parametric shortcuts of the VAE's Downsample / Upsample.

DC-AE (Chen et al. 2024) pixel-unshuffles to a (channel, sub-position) layout, then averages
groups of consecutive channels: the down shortcut averages the sub-pixels (and frame pair) of ONE
channel, and the up shortcut duplicates each channel into its own sub-pixels. So at equal width
the down shortcut is plain average pooling and the up shortcut is nearest-neighbour upsampling.

shortcut_layout='subpixel' is the pre-fix layout (sub-position major, which averaged different
channels at one sub-pixel); it is kept only so that weights trained before the fix (the demo VAEs
of sessions 2-5) load identically. The frozen numpy references below pin it down.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from sora_jax.models.vae import VAE, validate_vae_config, vae_from_config
from sora_jax.models.vae_blocks import (Downsample, Upsample, pool_to_channels,
                                        unpool_from_channels)

ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "sora_jax", "assets", "demo")
MODES = [(True, True), (False, True), (True, False)]  # (temporal, spatial)
IDS = ["time+space", "space", "time"]


# ---------------------------------------------------------------- numpy references (frozen)

def _pad_first(x, temporal, first):
  return np.concatenate([x[:, :1], x], axis=1) if temporal and first else x


def dcae_down_ref(x, temporal, spatial, features):
  """DC-AE PixelUnshuffleChannelAveragingDownSampleLayer, written in torch's NC... terms."""
  x = _pad_first(np.asarray(x, np.float64), temporal, True)
  pt, p = (2 if temporal else 1), (2 if spatial else 1)
  b, t, h, w, c = x.shape
  x = x.transpose(0, 4, 1, 2, 3)                                   # B C T H W
  x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p)           # pixel_unshuffle: (c, sub)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * pt * p * p, t // pt, h // p, w // p)
  cs = x.shape[1]
  if cs >= features:
    x = x.reshape(b, features, cs // features, *x.shape[2:]).mean(2)  # view(B, out, group).mean
  else:
    x = np.repeat(x, features // cs, axis=1)
  return x.transpose(0, 2, 3, 4, 1)


def dcae_up_ref(x, temporal, spatial, features):
  """DC-AE ChannelDuplicatingPixelUnshuffleUpSampleLayer: repeat_interleave, pixel_shuffle."""
  x = np.asarray(x, np.float64).transpose(0, 4, 1, 2, 3)           # B C T H W
  pt, p = (2 if temporal else 1), (2 if spatial else 1)
  b, c, t, h, w = x.shape
  out = features * pt * p * p
  x = np.repeat(x, out // c, axis=1) if out >= c else x.reshape(b, out, c // out, t, h, w).mean(2)
  x = x.reshape(b, features, pt, p, p, t, h, w).transpose(0, 1, 5, 2, 6, 3, 7, 4)
  x = x.reshape(b, features, t * pt, h * p, w * p).transpose(0, 2, 3, 4, 1)
  return x[:, 1:] if temporal else x


def old_down_ref(x, temporal, spatial, features):
  """The pre-fix shortcut, frozen: space_to_depth (dy, dx, c), frame pairs outermost
  (dt, dy, dx, c), then the mean of consecutive channels."""
  x = _pad_first(np.asarray(x, np.float64), temporal, True)
  pt, p = (2 if temporal else 1), (2 if spatial else 1)
  b, t, h, w, c = x.shape
  x = x.reshape(b, t // pt, pt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  x = x.reshape(b, t // pt, h // p, w // p, pt * p * p * c)
  cs = x.shape[-1]
  if cs >= features:
    return x.reshape(*x.shape[:-1], features, cs // features).mean(-1)
  return np.repeat(x, features // cs, axis=-1)


def old_up_ref(x, temporal, spatial, features):
  """The pre-fix up shortcut, frozen: repeat channels, depth_to_space (dy, dx, rest), then
  depth_to_time splitting rest as (dt, c) — not even the mirror of old_down_ref in time."""
  x = np.asarray(x, np.float64)
  pt, p = (2 if temporal else 1), (2 if spatial else 1)
  b, t, h, w, c = x.shape
  out = features * pt * p * p
  x = np.repeat(x, out // c, axis=-1) if out >= c else x.reshape(b, t, h, w, out, c // out).mean(-1)
  x = x.reshape(b, t, h, w, p, p, pt, features).transpose(0, 1, 6, 2, 4, 3, 5, 7)
  x = x.reshape(b, t * pt, h * p, w * p, features)
  return x[:, 1:] if temporal else x


# ---------------------------------------------------------------- module helpers

def _shortcut_only(module, x):
  """The module's output with its conv zeroed: exactly the non-parametric shortcut."""
  params = nn.unbox(jax.jit(module.init)(jax.random.key(0), x)["params"])
  zeros = jax.tree.map(jnp.zeros_like, params)
  return np.asarray(jax.jit(module.apply)({"params": zeros}, x))


def _shortcut_part(cls, features, temporal, spatial, layout, x):
  """With random conv params: shortcut module output minus the same module without shortcut."""
  kw = dict(features=features, temporal=temporal, spatial=spatial)
  with_sc = cls(**kw, shortcut=True, shortcut_layout=layout)
  params = nn.unbox(jax.jit(with_sc.init)(jax.random.key(3), x)["params"])
  y = jax.jit(with_sc.apply)({"params": params}, x)
  y0 = jax.jit(cls(**kw, shortcut=False).apply)({"params": params}, x)
  return np.asarray(y - y0)


def _video(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _avg_pool(x, temporal, spatial):
  x = _pad_first(np.asarray(x, np.float64), temporal, True)
  pt, p = (2 if temporal else 1), (2 if spatial else 1)
  b, t, h, w, c = x.shape
  return x.reshape(b, t // pt, pt, h // p, p, w // p, p, c).mean(axis=(2, 4, 6))


def _nearest_up(z, temporal, spatial):
  z = np.asarray(z)
  if spatial:
    z = np.repeat(np.repeat(z, 2, axis=2), 2, axis=3)
  if temporal:
    z = np.repeat(z, 2, axis=1)[:, 1:]   # latent frame 0 -> frame 0 only
  return z


# ---------------------------------------------------------------- the DC-AE behaviour

@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
def test_down_shortcut_at_equal_width_is_average_pooling(temporal, spatial):
  x = _video((2, 5, 8, 8, 6))
  y = _shortcut_only(Downsample(6, temporal, spatial, shortcut=True), x)
  np.testing.assert_allclose(y, _avg_pool(x, temporal, spatial), atol=1e-6)


@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
def test_up_shortcut_at_equal_width_is_nearest_upsampling(temporal, spatial):
  z = _video((2, 3, 4, 4, 6))
  y = _shortcut_only(Upsample(6, temporal, spatial, shortcut=True), z)
  np.testing.assert_array_equal(y, _nearest_up(z, temporal, spatial))


@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
@pytest.mark.parametrize("c_in,c_out", [(8, 4), (16, 2)])
def test_shortcuts_match_dcae_at_any_width(temporal, spatial, c_in, c_out):
  x = _video((1, 5, 8, 8, c_in), seed=1)
  down = _shortcut_part(Downsample, c_out, temporal, spatial, "channel", x)
  np.testing.assert_allclose(down, dcae_down_ref(x, temporal, spatial, c_out), atol=1e-5)
  up = _shortcut_part(Upsample, c_out, temporal, spatial, "channel", x)
  np.testing.assert_allclose(up, dcae_up_ref(x, temporal, spatial, c_out), atol=1e-5)


@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
@pytest.mark.parametrize("c,f", [(8, 16)])  # f * S >= c: up is lossless
def test_down_shortcut_inverts_up_shortcut(temporal, spatial, c, f):
  """Up (c -> f channels) then down (f -> c) is the identity (the VAE uses f == c).

  With f < c in time, channel k's copies span fewer sub-positions than a frame pair, so latent
  frame 0 (whose first frame is dropped) keeps only half of its channels; later frames stay exact.
  """
  z = _video((2, 3, 4, 4, c), seed=2)
  up = _shortcut_only(Upsample(f, temporal, spatial, shortcut=True), z)
  back = _shortcut_only(Downsample(c, temporal, spatial, shortcut=True), up)
  np.testing.assert_allclose(back[:, 1:], z[:, 1:], atol=1e-6)
  if f >= c or not temporal:
    np.testing.assert_allclose(back[:, 0], z[:, 0], atol=1e-6)


@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
def test_pool_and_unpool_invert_each_other(temporal, spatial):
  p = 2 if spatial else 1
  x = _video((2, 5, 8, 8, 3))
  pooled = pool_to_channels(x, p, temporal, True)
  s = (2 if temporal else 1) * p * p
  assert pooled.shape == (2, 3 if temporal else 5, 8 // p, 8 // p, 3 * s)
  # Channel k's sub-positions are the channels k*S ... k*S + S - 1.
  np.testing.assert_allclose(pooled.reshape(*pooled.shape[:-1], 3, s).mean(-1),
                             _avg_pool(x, temporal, spatial), atol=1e-6)
  np.testing.assert_array_equal(unpool_from_channels(pooled, p, temporal, True), x)
  later = x[:, 1:]  # a later chunk starts at an odd frame and holds whole pairs
  np.testing.assert_array_equal(
      unpool_from_channels(pool_to_channels(later, p, temporal, False), p, temporal, False), later)


# ---------------------------------------------------------------- compatibility: 'subpixel'

@pytest.mark.parametrize("temporal,spatial", MODES, ids=IDS)
@pytest.mark.parametrize("c_in,c_out", [(8, 8), (4, 8)])
def test_subpixel_layout_reproduces_the_pre_fix_shortcuts(temporal, spatial, c_in, c_out):
  x = _video((1, 5, 8, 8, c_in), seed=4)
  down = _shortcut_part(Downsample, c_out, temporal, spatial, "subpixel", x)
  np.testing.assert_allclose(down, old_down_ref(x, temporal, spatial, c_out), atol=1e-5)
  up = _shortcut_part(Upsample, c_out, temporal, spatial, "subpixel", x)
  np.testing.assert_allclose(up, old_up_ref(x, temporal, spatial, c_out), atol=1e-5)


def test_old_reference_is_not_average_pooling():
  """Guards the tests above: the pre-fix shortcut really mixes channels."""
  x = np.asarray(_video((2, 5, 8, 8, 6)))
  assert np.abs(old_down_ref(x, True, True, 6) - _avg_pool(x, True, True)).max() > 0.1
  assert np.abs(old_up_ref(x, True, True, 6) - _nearest_up(x, True, True)).max() > 0.1


TINY = dict(temporal_compression=4, spatial_compression=8, latent_channels=4, channels=8,
            channel_mult=(1, 1, 1, 1), shortcut=True)


def test_layouts_share_params_but_differ():
  x = jax.random.uniform(jax.random.key(0), (1, 5, 16, 16, 3), minval=-1, maxval=1)
  new, old = VAE(**TINY), VAE(**TINY, shortcut_layout="subpixel")
  assert new.shortcut_layout == "channel"  # the fix is the default
  params = nn.unbox(jax.jit(new.init)(jax.random.key(1), x)["params"])
  run = lambda vae: jax.jit(vae.apply)({"params": params}, x)  # noqa: E731
  (xn, mn, _), (xo, mo, _) = run(new), run(old)
  assert float(jnp.abs(mn - mo).max()) > 1e-3
  assert float(jnp.abs(xn - xo).max()) > 1e-3


def _vae_cfg(**kw):
  base = dict(temporal_compression=4, spatial_compression=8, latent_channels=4, channels=8,
              channel_mult=(1, 1, 1, 1), num_res_blocks=1, shortcut=True)
  base.update(kw)
  return mlc.ConfigDict(base)


def test_config_key_selects_layout():
  assert vae_from_config(_vae_cfg()).shortcut_layout == "channel"
  assert vae_from_config(_vae_cfg(shortcut_layout="subpixel")).shortcut_layout == "subpixel"
  validate_vae_config(_vae_cfg(shortcut_layout="subpixel"), 17, 64, 64)
  with pytest.raises(ValueError, match="vae.shortcut_layout"):
    validate_vae_config(_vae_cfg(shortcut_layout="dcae"), 17, 64, 64)


@pytest.mark.parametrize("stage", ["vae", "t2v"])
def test_shipped_demo_configs_name_the_layout_their_vae_was_trained_with(stage):
  # Written out, not left to a default: the default changed once (the layout fix), and a default
  # that moves must never change how shipped weights load.
  with open(os.path.join(ASSETS, stage, "config.json")) as f:
    cfg = mlc.ConfigDict(json.load(f))
  with open(os.path.join(ASSETS, "vae", "config.json")) as f:
    trained = json.load(f)["vae"]["shortcut_layout"]
  assert cfg.vae.shortcut_layout == trained
  assert vae_from_config(cfg.vae).shortcut_layout == trained

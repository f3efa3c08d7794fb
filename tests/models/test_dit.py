import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import dit

ALLOWED = {"embed", "mlp", "heads", "kv", "vocab", "layers", "conv_in", "conv_out", "norm",
           "patch", "classes", None}
B, T, H, W, C, L, DT = 2, 2, 8, 8, 4, 5, 16  # 2 * 4 * 4 = 32 tokens


def _model(**kw):
  base = dict(width=32, depth=2, heads=2, patch=(1, 2, 2), in_channels=C, text_width=DT)
  return dit.DiT(**{**base, **kw})


def _inputs(seed=0):
  r = np.random.RandomState(seed)
  x = jnp.asarray(r.randn(B, T, H, W, C), jnp.float32)
  t = jnp.asarray([0.2, 0.9], jnp.float32)
  ctx = jnp.asarray(r.randn(B, L, DT), jnp.float32)
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  return x, t, ctx, mask


def _randomize(params, seed=1):
  """Random values everywhere, so zero-initialised gates do not hide wrong math."""
  r = np.random.RandomState(seed)  # numpy: eager jax.random compiles once per shape
  return jax.tree.map(lambda l: jnp.asarray(0.2 * r.randn(*l.shape), l.dtype), params)


@pytest.fixture(scope="module")
def setup():
  model = _model()
  x, t, ctx, mask = _inputs()
  variables = jax.jit(lambda k: model.init(k, x, t, context=ctx, context_mask=mask))(
      jax.random.key(0))
  params = nn.unbox(variables["params"])
  rparams = _randomize(params)
  apply = jax.jit(lambda p, x, t, ctx, mask: model.apply({"params": p}, x, t, context=ctx,
                                                         context_mask=mask))
  return dict(model=model, boxed=variables["params"], params=params, rparams=rparams,
              apply=apply, inputs=(x, t, ctx, mask))


def test_shapes_zero_init_and_names(setup):
  x, t, ctx, mask = setup["inputs"]
  y = setup["apply"](setup["params"], x, t, ctx, mask)
  assert y.shape == x.shape
  np.testing.assert_array_equal(y, 0.0)  # adaLN-zero: the untrained model predicts zero
  y = setup["apply"](setup["rparams"], x, t, ctx, mask)
  assert np.isfinite(y).all() and float(jnp.abs(y).mean()) > 1e-3
  leaves = jax.tree.leaves(setup["boxed"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= ALLOWED, leaf.names
  blocks = setup["boxed"]["blocks"]
  assert blocks["attn"]["query"]["kernel"].names == ("layers", "embed", "heads", "kv")
  assert blocks["mlp"]["fc2"]["kernel"].names == ("layers", "mlp", "embed")


def test_auto_remat_policy_follows_the_backend():
  assert dit.remat_policy_for_backend("auto", "cpu") == "dots_with_no_batch_dims_saveable"
  assert dit.remat_policy_for_backend("auto", "gpu") == "nothing_saveable"
  assert dit.remat_policy_for_backend("auto", "tpu") == "nothing_saveable"
  assert dit.remat_policy_for_backend("none", "cpu") == "none"
  x, t, ctx, mask = _inputs()
  with pytest.raises(ValueError, match="'some' is not one of auto, none"):
    jax.eval_shape(lambda: _model(remat_policy="some").init(jax.random.key(0), x, t,
                                                            context=ctx, context_mask=mask))


def test_scan_equals_unrolled_and_remat(setup):
  x, t, ctx, mask = setup["inputs"]
  want = setup["apply"](setup["rparams"], x, t, ctx, mask)
  unrolled = _model(scan_layers=False, remat_policy="none")
  p = dict(setup["rparams"])
  stacked = p.pop("blocks")
  for i in range(2):
    p[f"blocks_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
  got = jax.jit(lambda q: unrolled.apply({"params": q}, x, t, context=ctx,
                                         context_mask=mask))(p)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)

  def loss(model, params):
    return jnp.mean(model.apply({"params": params}, x, t, context=ctx, context_mask=mask) ** 2)

  g_remat = jax.jit(jax.grad(lambda q: loss(setup["model"], q)))(setup["rparams"])
  g_plain = jax.jit(jax.grad(lambda q: loss(_model(remat_policy="none"), q)))(setup["rparams"])
  for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(g_remat["blocks"]["attn"]["query"]["kernel"]).max()) > 0


def test_per_frame_timesteps(setup):
  x, t, ctx, mask = setup["inputs"]
  apply, p = setup["apply"], setup["rparams"]
  per_sample = apply(p, x, t, ctx, mask)
  per_frame = apply(p, x, jnp.repeat(t[:, None], T, 1), ctx, mask)
  np.testing.assert_allclose(per_frame, per_sample, rtol=1e-5, atol=1e-5)
  # Cleaning only frame 0 (image-to-video) changes the prediction.
  i2v = apply(p, x, jnp.repeat(t[:, None], T, 1).at[:, 0].set(0.0), ctx, mask)
  assert float(jnp.abs(i2v - per_sample).max()) > 1e-3


def test_text_mask_and_null_caption(setup):
  x, t, ctx, mask = setup["inputs"]
  apply, p = setup["apply"], setup["rparams"]
  y = apply(p, x, t, ctx, mask)
  y_pad = apply(p, x, t, ctx.at[0, 3:].set(100.0), mask)  # padding of sample 0 changed
  np.testing.assert_allclose(y_pad, y, rtol=1e-5, atol=1e-5)
  y_ctx = apply(p, x, t, ctx.at[0, 0].set(3.0), mask)  # a real token of sample 0 changed
  assert float(jnp.abs(y_ctx[0] - y[0]).max()) > 1e-4
  np.testing.assert_allclose(y_ctx[1], y[1], rtol=1e-5, atol=1e-5)
  null = apply(p, x, t, ctx, jnp.zeros_like(mask))
  assert np.isfinite(null).all()


def test_any_grid_size_and_errors(setup):
  """RoPE-3D: trained at 2x4x4 tokens, runs at 3x6x8 with the same params."""
  _, _, ctx, mask = setup["inputs"]
  big = jnp.ones((B, 3, 12, 16, C))
  y = setup["model"].apply({"params": setup["rparams"]}, big, jnp.array([0.5, 0.5]),
                           context=ctx, context_mask=mask)
  assert y.shape == big.shape and np.isfinite(y).all()
  with pytest.raises(ValueError, match="height 9 is odd"):
    setup["model"].apply({"params": setup["rparams"]}, jnp.ones((B, 2, 9, 8, C)),
                         jnp.array([0.5, 0.5]), context=ctx, context_mask=mask)
  with pytest.raises(ValueError, match="needs context"):
    setup["model"].apply({"params": setup["rparams"]}, big, jnp.array([0.5, 0.5]))


def test_class_mode_null_label():
  model = _model(cond="class", num_classes=10, pos="sincos", mlp="gelu", qk_norm=False,
                 out_channels=2 * C)
  x, t, _, _ = _inputs()
  labels = jnp.array([3, 10])  # 10 = the null class
  p = nn.unbox(model.init(jax.random.key(0), x, t, labels=labels)["params"])
  assert p["label_embed"].shape == (11, 32)
  assert "cross_attn" not in p["blocks"] and "q_norm" not in p["blocks"]["attn"]
  y = model.apply({"params": _randomize(p)}, x, t, labels=labels)
  assert y.shape == (B, T, H, W, 2 * C) and np.isfinite(y).all()


def test_decode_variant_and_from_config():
  assert dit.decode_variant("S/1x2x2") == dict(width=384, depth=12, heads=6, patch=(1, 2, 2))
  assert dit.decode_variant("B/2")["patch"] == (1, 2, 2)
  assert dit.decode_variant("XL/8") == dict(width=1152, depth=28, heads=16, patch=(1, 8, 8))
  assert dit.decode_variant("L") == dict(width=1024, depth=24, heads=16)
  with pytest.raises(ValueError, match="not known"):
    dit.decode_variant("XXL/2")
  cfg = dict(variant="Mu", patch=(2, 2, 2), width=0, depth=1, heads=0, mlp="gelu",
             remat_policy="dots_saveable", scan_layers=False, dtype="bfloat16")
  m = dit.dit_from_config(cfg, in_channels=8, text_width=16)
  assert (m.width, m.depth, m.heads, m.patch, m.mlp) == (64, 1, 2, (2, 2, 2), "gelu")
  assert m.dtype == jnp.bfloat16 and m.in_channels == 8 and not m.scan_layers


def test_out_conv_starts_as_the_identity_and_mixes_neighbouring_patches(setup):
  """model.out_conv: zero-initialised, so a model given it computes what the same weights did
  without it (an additive option for train.init_from); once trained it reads across token
  boundaries, which a per-token output projection cannot."""
  x, t, ctx, mask = setup["inputs"]
  model = _model(out_conv=(1, 3, 3))
  params = nn.unbox(jax.jit(lambda k: model.init(k, x, t, context=ctx, context_mask=mask))(
      jax.random.key(0))["params"])
  assert set(params) == set(setup["params"]) | {"out_conv"}
  assert params["out_conv"]["kernel"].shape == (1, 3, 3, C, C)
  apply = jax.jit(lambda p: model.apply({"params": p}, x, t, context=ctx, context_mask=mask))
  with_conv = dict(setup["rparams"], out_conv=params["out_conv"])
  np.testing.assert_array_equal(apply(with_conv), setup["apply"](setup["rparams"], x, t, ctx,
                                                                 mask))
  # One identity tap a pixel to the right: the output at w = 1 (the last pixel of token
  # column 0) adds w = 2 (the first pixel of token column 1).
  base = setup["apply"](setup["rparams"], x, t, ctx, mask)
  kernel = np.zeros((1, 3, 3, C, C), np.float32)
  kernel[0, 1, 2] = np.eye(C)
  shifted = apply(dict(with_conv, out_conv={"kernel": jnp.asarray(kernel),
                                             "bias": jnp.zeros((C,))}))
  np.testing.assert_allclose(shifted[:, :, :, 1], base[:, :, :, 1] + base[:, :, :, 2],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shifted[:, :, :, -1], base[:, :, :, -1], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="KTxKHxKW with odd sizes"):
    dit.parse_out_conv("1x2x2")
  assert dit.parse_out_conv("3x3x3") == (3, 3, 3) and dit.parse_out_conv("") == ()

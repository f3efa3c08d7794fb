"""A packed row of clips of different sizes equals each clip run alone through the DiT, in output
and in the parameters' gradient; padding never reaches a clip."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import dit, patching

C, L, DT, PATCH = 4, 5, 16, (1, 2, 2)
# (latent grid, caption length, t): 32, 12 and 4 tokens — three aspect ratios and an image.
CLIPS = [((2, 8, 8), 3, 0.3), ((1, 4, 12), 5, 0.8), ((1, 4, 4), 2, 0.55)]
BUDGET = 52   # 48 real tokens + 4 padding


def _model():
  return dit.DiT(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT)


def _clips(seed=0):
  r = np.random.RandomState(seed)
  out = []
  for grid, n_text, t in CLIPS:
    x = r.randn(1, *grid, C).astype(np.float32)
    ctx = r.randn(1, L, DT).astype(np.float32)
    mask = np.arange(L)[None] < n_text
    out.append((x, t, ctx, mask))
  return out


def _pack(clips):
  """The row `sora_jax.data.packing` builds: tokens side by side, captions slot by slot."""
  toks, pos, seg = [], [], []
  for i, (x, _, _, _) in enumerate(clips):
    tok, grid = patching.patchify(x, PATCH)
    n = tok.shape[1]
    toks.append(np.asarray(tok[0]))
    pos.append(np.asarray(patching.grid_positions(grid)))
    seg += [i + 1] * n
  pad = BUDGET - len(seg)
  toks.append(np.full((pad, toks[0].shape[1]), 7.0, np.float32))   # junk must not leak
  pos.append(np.zeros((pad, 3), np.int32))
  seg += [0] * pad
  tt = [c[1] for c in clips] + [0.5]      # one t per clip slot; the last slot is empty
  ctx = np.concatenate([c[2][0] for c in clips] + [np.full((L, DT), 3.0, np.float32)])
  cmask = np.concatenate([c[3][0] for c in clips] + [np.ones(L, bool)])
  cseg = np.repeat(np.arange(1, len(clips) + 2) % (len(clips) + 1), L)  # last slot: id 0
  return dict(x=np.concatenate(toks)[None], t=np.asarray(tt, np.float32)[None],
              positions=np.concatenate(pos)[None], segment_ids=np.asarray(seg)[None],
              context=ctx[None], context_mask=cmask[None], context_segment_ids=cseg[None])


@pytest.fixture(scope="module")
def setup():
  model = _model()
  clips = _clips()
  x, t, ctx, mask = clips[0]
  params = nn.unbox(jax.jit(lambda k: model.init(k, x, jnp.full((1,), t), context=ctx,
                                                 context_mask=mask))(jax.random.key(0))["params"])
  r = np.random.RandomState(1)   # random everywhere: zero-initialised gates hide wrong math
  params = jax.tree.map(lambda l: jnp.asarray(0.2 * r.randn(*l.shape), l.dtype), params)
  return model, params, clips, _pack(clips)


def _weights(shape, seed):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


def test_packed_row_equals_each_clip_alone(setup):
  model, params, clips, p = setup
  w = _weights(p["x"].shape, 3)

  def apply_packed(prm):
    return model.apply({"params": prm}, p["x"], p["t"], context=p["context"],
                       context_mask=p["context_mask"], segment_ids=p["segment_ids"],
                       positions=p["positions"], context_segment_ids=p["context_segment_ids"])

  def apply_alone(prm):   # each clip through the unpacked model, tokens side by side
    return jnp.concatenate([patching.patchify(model.apply(
        {"params": prm}, x, jnp.full((1,), t), context=ctx, context_mask=mask), PATCH)[0]
        for x, t, ctx, mask in clips], axis=1)

  n = sum(int(np.prod(patching.token_grid(*c[0].shape[1:4], PATCH))) for c in clips)

  # A per-clip loss: packed (weights zero on padding) against the same sum over clips alone.
  def loss_packed(prm):
    return jnp.sum(jnp.sin(apply_packed(prm)) * w * (p["segment_ids"][..., None] > 0))

  def loss_alone(prm):
    return jnp.sum(jnp.sin(apply_alone(prm)) * w[:, :n])

  # One compiled program for all four: eager applies of a scanned model are slow.
  out, alone, g_p, g_a = jax.jit(lambda prm: (apply_packed(prm), apply_alone(prm),
                                              jax.grad(loss_packed)(prm),
                                              jax.grad(loss_alone)(prm)))(params)
  assert out.shape == p["x"].shape
  np.testing.assert_allclose(out[:, :n], alone, rtol=2e-4, atol=2e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_p), jax.tree.leaves(g_a)):
    # float32 sums in another order: tolerance relative to the leaf's scale
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * float(np.abs(b).max()) + 1e-6,
                               err_msg=jax.tree_util.keystr(path))


def _assert_packed_equals_alone(model, params, clips, p):
  """The packed row's tokens equal each clip run alone through `model`, side by side."""
  packed, alone = jax.jit(lambda prm: (
      model.apply({"params": prm}, p["x"], p["t"], context=p["context"],
                  context_mask=p["context_mask"], segment_ids=p["segment_ids"],
                  positions=p["positions"], context_segment_ids=p["context_segment_ids"]),
      jnp.concatenate([patching.patchify(model.apply(
          {"params": prm}, x, jnp.full((1,), t), context=ctx, context_mask=mask), PATCH)[0]
          for x, t, ctx, mask in clips], axis=1)))(params)
  np.testing.assert_allclose(packed[:, :alone.shape[1]], alone, rtol=2e-4, atol=2e-5)


def test_absolute_positions_packed_equal_each_clip_alone(setup):
  """pos='rope3d+abs' adds each token's sin-cos (t, h, w): a packed clip still reads only its own
  grid's positions, so it equals the clip alone."""
  _, params, clips, p = setup
  model = dit.DiT(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT,
                  pos="rope3d+abs")
  _assert_packed_equals_alone(model, params, clips, p)
  # ... and the positions matter: the same row without them is another function.
  rope_only = dit.DiT(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT)
  first = clips[0]
  a, b = (m.apply({"params": params}, first[0], jnp.full((1,), first[1]), context=first[2],
                  context_mask=first[3]) for m in (model, rope_only))
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_layout_readout_packed_equals_each_clip_alone(setup):
  """model.layout_readout: each place reads its own clip's caption by its position alone; packed,
  a clip still reads only its caption and its grid, and the path changes the output."""
  _, base, clips, p = setup
  model = dit.DiT(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT,
                  pos="rope3d+abs", layout_readout=True)
  x, t, ctx, mask = clips[0]
  fresh = nn.unbox(jax.jit(lambda k: model.init(k, x, jnp.full((1,), t), context=ctx,
                                                context_mask=mask))(jax.random.key(1))["params"])
  # zero-initialised: a new run starts as the plain DiT
  assert not np.any(np.asarray(fresh["layout_readout"]["out"]["kernel"]))
  r = np.random.RandomState(2)
  params = dict(base, **{k: jax.tree.map(lambda l: jnp.asarray(0.2 * r.randn(*l.shape), l.dtype),
                                         fresh[k]) for k in ("layout_query", "layout_readout")})
  out = params["layout_readout"]["out"]["kernel"]
  _assert_packed_equals_alone(model, params, clips, p)
  off = dict(params, layout_readout=dict(params["layout_readout"], out=dict(
      params["layout_readout"]["out"], kernel=jnp.zeros_like(out))))
  a, b = (model.apply({"params": prm}, x, jnp.full((1,), t), context=ctx, context_mask=mask)
          for prm in (params, off))
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_packed_input_errors(setup):
  model, params, _, p = setup
  kw = {k: p[k] for k in ("context", "context_mask", "segment_ids", "context_segment_ids")}
  with pytest.raises(ValueError, match=r"positions must be \(1, 52, 3\)"):
    model.apply({"params": params}, p["x"], p["t"], positions=p["positions"][:, :, :2], **kw)
  with pytest.raises(ValueError, match=r"packed DiT input x must be \(1, 52, 16\)"):
    model.apply({"params": params}, p["x"][..., :8], p["t"], positions=p["positions"], **kw)
  with pytest.raises(ValueError, match="context_segment_ids"):
    model.apply({"params": params}, p["x"], p["t"], positions=p["positions"],
                **{**kw, "context_segment_ids": None})


def test_per_frame_t_of_packed_clips_equals_each_clip_alone(setup):
  """Frame conditioning of packed clips: t per (clip, token frame) [B, S, F] gives each clip the
  output of the unpacked model with per-frame t [1, T]."""
  model, params, clips, p = setup
  t_frames = [np.asarray([0.0, 0.7]), np.asarray([0.4]), np.asarray([0.9])]
  t3 = np.zeros((1, 4, 2), np.float32)
  for i, tf in enumerate(t_frames):
    t3[0, i, :len(tf)] = tf

  def both(prm):
    packed = model.apply({"params": prm}, p["x"], t3, context=p["context"],
                         context_mask=p["context_mask"], segment_ids=p["segment_ids"],
                         positions=p["positions"], context_segment_ids=p["context_segment_ids"])
    alone = [patching.patchify(model.apply({"params": prm}, x, jnp.asarray(tf)[None],
                                           context=ctx, context_mask=mask), PATCH)[0]
             for (x, _, ctx, mask), tf in zip(clips, t_frames)]
    return packed, jnp.concatenate(alone, axis=1)

  packed, alone = jax.jit(both)(params)
  np.testing.assert_allclose(packed[:, :alone.shape[1]], alone, rtol=2e-4, atol=2e-5)


def test_layout_prior_is_a_head_beside_the_flow_and_packs(setup):
  """model.layout_prior: what the layout readout reads, mapped to the clean clip's patches. The
  head leaves the flow output untouched, and a packed clip's prior equals the clip alone."""
  _, base, clips, p = setup
  kw = dict(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT,
            layout_readout=True)
  readout, model = dit.DiT(**kw), dit.DiT(**kw, layout_prior=True)
  x, t, ctx, mask = clips[0]
  fresh = nn.unbox(jax.jit(lambda k: model.init(k, x, jnp.full((1,), t), context=ctx,
                                                context_mask=mask))(jax.random.key(1))["params"])
  assert fresh["layout_prior"]["kernel"].shape == (32, int(np.prod(PATCH)) * C)
  r = np.random.RandomState(4)
  params = dict(base, **{k: jax.tree.map(lambda l: jnp.asarray(0.2 * r.randn(*l.shape), l.dtype),
                                         fresh[k])
                         for k in ("layout_query", "layout_readout", "layout_prior")})
  no_head = {k: v for k, v in params.items() if k != "layout_prior"}

  def run(prm):
    flow = model.apply({"params": prm}, x, jnp.full((1,), t), context=ctx, context_mask=mask)
    plain = readout.apply({"params": no_head}, x, jnp.full((1,), t), context=ctx,
                          context_mask=mask)
    packed = model.apply({"params": prm}, p["x"], p["t"], context=p["context"],
                         context_mask=p["context_mask"], segment_ids=p["segment_ids"],
                         positions=p["positions"], context_segment_ids=p["context_segment_ids"],
                         layout_prior_only=True)
    alone = [model.apply({"params": prm}, c[0], jnp.zeros((1,)), context=c[2], context_mask=c[3],
                         layout_prior_only=True) for c in clips]
    # the prior reads the caption and the place only: x and t do not reach it
    other = model.apply({"params": prm}, 5.0 * x, jnp.full((1,), 0.9), context=ctx,
                        context_mask=mask, layout_prior_only=True)
    return flow, plain, packed, alone, other

  flow, plain, packed, alone, other = jax.jit(run)(params)
  np.testing.assert_allclose(flow, plain, rtol=1e-5, atol=2e-5)   # fused differently
  assert alone[0].shape == x.shape
  np.testing.assert_allclose(other, alone[0], rtol=1e-6, atol=1e-6)
  cat = jnp.concatenate([patching.patchify(a, PATCH)[0] for a in alone], axis=1)
  np.testing.assert_allclose(packed[:, :cat.shape[1]], cat, rtol=2e-4, atol=2e-5)
  assert float(jnp.std(cat)) > 1e-2   # not a zero head: the comparison means something

  with pytest.raises(ValueError, match="layout_prior_only needs model.layout_prior"):
    readout.apply({"params": no_head}, x, jnp.full((1,), t), context=ctx, context_mask=mask,
                  layout_prior_only=True)
  with pytest.raises(ValueError, match="set model.layout_readout=True"):
    dit.DiT(**dict(kw, layout_readout=False), layout_prior=True).init(
        jax.random.key(0), x, jnp.full((1,), t), context=ctx, context_mask=mask)


def _packed_apply(model, p):
  return lambda prm: model.apply({"params": prm}, p["x"], p["t"], context=p["context"],
                                 context_mask=p["context_mask"], segment_ids=p["segment_ids"],
                                 positions=p["positions"],
                                 context_segment_ids=p["context_segment_ids"])


def _cudnn_model():
  return dit.DiT(width=32, depth=2, heads=2, patch=PATCH, in_channels=C, text_width=DT,
                 attention_impl="cudnn", dtype=jnp.bfloat16, layout_readout=True)


def test_cudnn_packed_rows_lower_to_the_packed_kernel(setup, monkeypatch):
  """attention_impl='cudnn' on packed rows: every attention (self, text, layout readout) lowers
  to cuDNN's packed layout with a bound of the row's caption slots + 1, never to a dense mask.
  Lowered for CUDA on any machine; run on a GPU by the test below."""
  import re

  from jax._src.cudnn import fused_attention_stablehlo as fused
  if jax.default_backend() != "gpu":   # no GPU to ask: a Hopper with cuDNN 9.8
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 90800)
    monkeypatch.setattr(fused, "check_is_flash_attention", lambda *a, **k: None)
  _, _, clips, p = setup
  model = _cudnn_model()
  x, t, ctx, mask = clips[0]
  params = jax.eval_shape(lambda k: nn.unbox(model.init(k, x, jnp.full((1,), t), context=ctx,
                                                        context_mask=mask)["params"]),
                          jax.random.key(0))
  text = jax.jit(_packed_apply(model, p)).trace(params).lower(
      lowering_platforms=("cuda",)).as_text().replace("\\22", '"')
  calls = re.findall(r"__cudnn\$fmha\w*", text)
  bounds = re.findall(r'"max_seg_per_batch":\s*(\d+)', text)
  # scanned blocks: one self- and one cross-attention in the scan body, plus the readout
  assert len(calls) == 3 and bounds == [str(p["t"].shape[1] + 1)] * 3, (calls, bounds)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN runs on a GPU only")
def test_cudnn_packed_rows_equal_xla_on_a_gpu(setup):
  """On a GPU: the packed row through cuDNN's packed layout gives the XLA path's clip tokens and
  parameter gradient, to bf16 accuracy."""
  _, _, clips, p = setup
  model = _cudnn_model()
  xla = model.clone(attention_impl="xla")
  x, t, ctx, mask = clips[0]
  params = nn.unbox(model.init(jax.random.key(0), x, jnp.full((1,), t), context=ctx,
                               context_mask=mask)["params"])
  r = np.random.RandomState(1)
  params = jax.tree.map(lambda l: jnp.asarray(0.2 * r.randn(*l.shape), l.dtype), params)
  valid = (p["segment_ids"] > 0)[..., None]
  w = _weights(p["x"].shape, 3)

  def run(m):
    f = _packed_apply(m, p)
    loss = lambda prm: jnp.sum(jnp.sin(f(prm).astype(jnp.float32)) * w * valid)  # noqa: E731
    return jax.jit(lambda prm: (f(prm), jax.grad(loss)(prm)))(params)

  (out_c, g_c), (out_x, g_x) = run(model), run(xla)
  rel = lambda a, b: float(jnp.linalg.norm((a - b).astype(jnp.float32))  # noqa: E731
                           / jnp.linalg.norm(b.astype(jnp.float32)))
  assert bool(jnp.all(jnp.isfinite(out_c.astype(jnp.float32))))
  assert rel(out_c * valid, out_x * valid) < 2e-2
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_c), jax.tree.leaves(g_x)):
    assert bool(jnp.all(jnp.isfinite(a))), jax.tree_util.keystr(path)
    assert rel(a, b) < 5e-2, jax.tree_util.keystr(path)

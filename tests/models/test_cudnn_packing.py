"""cuDNN's packed (THD) layout for packed rows, on CPU: the segment lengths/offsets derived from
segment ids give back exactly `segment_mask` (and the key mask) when read as ranges, also after
jax's own conversion to cuDNN's cumulative offsets; the wrapper's treatment of uncovered rows;
and the packed path's lowering for CUDA (the kernel itself: benchmarks/gpu_packed_attention.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo as fused

from sora_jax.models import attention as A
from sora_jax.models import cudnn_packing as P


def _rows(r, b, t, max_clips, pad=True):
  """Packer-like rows: clips 1..n as contiguous runs of random lengths, then padding (id 0)."""
  ids = np.zeros((b, t), np.int32)
  for i in range(b):
    n = r.randint(1, max_clips + 1)
    used = r.randint(n, t + 1) if pad else t
    cuts = np.sort(r.choice(np.arange(1, used), n - 1, replace=False)) if n > 1 else []
    for s, (a, e) in enumerate(zip([0, *cuts], [*cuts, used])):
      ids[i, a:e] = s + 1
  return ids


def _captions(r, ids, slots, L):
  """Caption slot j holds clip j + 1 (id 0 when empty), valid tokens left-aligned; an empty slot
  reads its first token, as T2VSystem._packed_context makes it."""
  b = ids.shape[0]
  seg = np.zeros((b, slots * L), np.int32)
  mask = np.zeros((b, slots * L), bool)
  for i in range(b):
    n = ids[i].max()
    for j in range(slots):
      seg[i, j * L:(j + 1) * L] = j + 1 if j < n else 0
      mask[i, j * L:j * L + (r.randint(1, L + 1) if j < n else 1)] = True
  return seg, mask


_fix = jax.jit(fused._fix_seqlen_offsets)  # noqa: SLF001  jax's conversion to cuDNN's arrays
_packed = jax.jit(P.packed_segments, static_argnames="max_segments")


def _mask(ids, kv_ids=None):
  return np.asarray(A.segment_mask(jnp.asarray(ids), None if kv_ids is None else
                                   jnp.asarray(kv_ids)))[:, 0]


def _ranges_mask(ps, t, s):
  """The plain reading of the layout: query segment i attends keys of its range, nothing else."""
  ql, kl, qo, ko = (np.asarray(a) for a in ps[:4])
  assert (qo[:, -1] == -1).all() and (ko[:, -1] == -1).all()
  out = np.zeros((ql.shape[0], t, s), bool)
  for b, i in zip(*np.nonzero(ql >= 0)):
    assert qo[b, i] >= 0 and ko[b, i] >= 0 and kl[b, i] > 0
    out[b, qo[b, i]:qo[b, i] + ql[b, i], ko[b, i]:ko[b, i] + kl[b, i]] = True
  for a in (ql, kl, qo[:, :-1], ko[:, :-1]):
    np.testing.assert_array_equal(a < 0, ql < 0)  # unused together, or jax's compaction shifts
  return out


def _cudnn_global_mask(ps, b, t, s, n=2, h=8):
  """The same after jax's own conversion to cuDNN's arrays: B*M lengths and B*M + 1 element
  offsets of the flattened batch (rows shifted by b*T, times heads*head_dim)."""
  q, k = jnp.zeros((b, t, n, h)), jnp.zeros((b, s, n, h))
  ql, kl, qo, ko = (np.asarray(a) for a in _fix(*ps[:4], q, k))
  ql, kl, qo, ko = ql.ravel(), kl.ravel(), qo.ravel() // (n * h), ko.ravel() // (n * h)
  out = np.zeros((b * t, b * s), bool)
  for i in range(len(ql)):
    out[qo[i]:qo[i] + ql[i], ko[i]:ko[i] + kl[i]] = True
  return out


def _blocks(mask):
  b, t, s = mask.shape
  out = np.zeros((b * t, b * s), bool)
  for i in range(b):
    out[i * t:(i + 1) * t, i * s:(i + 1) * s] = mask[i]
  return out


def test_self_attention_layout_is_segment_mask():
  """Random packed rows (batch 5, 1-6 clips, with and without padding): the layout is exactly
  segment_mask, padding attending padding included, before and after jax's conversion."""
  r = np.random.RandomState(0)
  ids = np.concatenate([_rows(r, 3, 40, 6), _rows(r, 2, 40, 6, pad=False)])
  ps = _packed(ids, max_segments=7)
  want = _mask(ids)
  np.testing.assert_array_equal(_ranges_mask(ps, 40, 40), want)
  np.testing.assert_array_equal(_cudnn_global_mask(ps, 5, 40, 40), _blocks(want))
  assert np.asarray(ps.q_covered).all() and np.asarray(ps.kv_covered).all()
  assert not np.asarray(ps.overflow).any()


def test_cross_attention_layout_is_segment_and_key_mask():
  """Queries packed, keys = caption slots: every clip token reads exactly its caption's valid
  tokens; a padding query reads the empty slot's null token when there is exactly one empty
  slot, and nothing otherwise (the keys it may read are not one range)."""
  r = np.random.RandomState(1)
  ids = np.concatenate([_rows(r, 4, 48, 5), _rows(r, 2, 48, 5, pad=False)])
  ids[0] = np.repeat([1, 2, 3, 4, 5, 0], 8)   # full slots: padding reads nothing
  ids[1] = np.repeat([1, 2, 3, 4, 0, 0], 8)   # one empty slot: padding reads its null token
  ids[2] = np.repeat([1, 2, 0, 0, 0, 0], 8)   # three empty slots: not one range
  seg, mask = _captions(r, ids, slots=5, L=6)
  ps = _packed(ids, seg, mask, max_segments=6)
  got = _ranges_mask(ps, 48, 30)
  want = _mask(ids, seg) & mask[:, None]
  clip = ids > 0
  np.testing.assert_array_equal(got[clip], want[clip])
  np.testing.assert_array_equal(got[1], want[1])
  assert not got[0][~clip[0]].any() and not want[0][~clip[0]].any()
  assert not got[2][~clip[2]].any() and want[2][~clip[2]].any()
  np.testing.assert_array_equal(np.asarray(ps.q_covered), got.any(-1))
  np.testing.assert_array_equal(np.asarray(ps.kv_covered), got.any(1))
  np.testing.assert_array_equal(_cudnn_global_mask(ps, 6, 48, 30), _blocks(got))


def test_edge_rows_and_segment_bound():
  """One clip without padding, all padding, one clip then padding, a row of exactly M runs, and
  one of M + 1 runs: its last run is overflow, in no segment."""
  m = 4
  ids = np.array([[1] * 12, [0] * 12, [1] * 9 + [0] * 3, [1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4],
                  [1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 0, 0]], np.int32)
  ps = _packed(ids, max_segments=m)
  got, want = _ranges_mask(ps, 12, 12), _mask(ids)
  np.testing.assert_array_equal(got[:4], want[:4])
  np.testing.assert_array_equal(np.asarray(ps.q_seqlen)[:3], [[12, -1, -1, -1], [12, -1, -1, -1],
                                                               [9, 3, -1, -1]])
  np.testing.assert_array_equal(np.asarray(ps.q_offsets)[3], [0, 2, 5, 6, -1])
  np.testing.assert_array_equal(np.asarray(ps.overflow)[4], [False] * 10 + [True] * 2)
  np.testing.assert_array_equal(got[4][:10], want[4][:10])
  assert not got[4][10:].any() and not np.asarray(ps.q_covered)[4][10:].any()
  assert not np.asarray(ps.overflow)[:4].any()


def test_split_segment_is_dropped_not_merged():
  """An id in two separate runs (not what the packer makes) cannot be a range: its queries read
  nothing rather than a wrong subset, while other segments stay exact."""
  ids = np.array([[1, 1, 2, 2, 1, 3, 3, 3]], np.int32)
  ps = _packed(ids, max_segments=5)
  got, want = _ranges_mask(ps, 8, 8)[0], _mask(ids)[0]
  keep = ids[0] != 1
  np.testing.assert_array_equal(got[keep], want[keep])
  assert not got[~keep].any()
  np.testing.assert_array_equal(np.asarray(ps.q_covered)[0], keep)


def _fake_kernel(monkeypatch):
  """cuDNN's packed kernel in plain jnp, on CPU: softmax attention within the ranges; rows of out,
  dq, dk, dv outside every range are NaN, as undefined memory may be."""
  def ranges(ql, kl, qo, ko, t, s):
    i, j = jnp.arange(t)[None, :, None], jnp.arange(s)[None, :, None]
    inq = (qo[:, None, :-1] <= i) & (i < qo[:, None, :-1] + ql[:, None])   # [B, T, M]
    ink = (ko[:, None, :-1] <= j) & (j < ko[:, None, :-1] + kl[:, None])   # [B, S, M]
    return jnp.einsum("btm,bsm->bts", inq.astype(jnp.int32), ink.astype(jnp.int32)) > 0

  @jax.custom_vjp
  def kernel(q, k, v, ql, kl, qo, ko):
    return fwd(q, k, v, ql, kl, qo, ko)[0]

  def fwd(q, k, v, ql, kl, qo, ko):
    m = ranges(ql, kl, qo, ko, q.shape[1], k.shape[1])
    f = lambda q, k, v: A.xla_attention(q, k, v, m[:, None])  # noqa: E731
    out, vjp = jax.vjp(f, q, k, v)
    return jnp.where(m.any(-1)[..., None, None], out, jnp.nan), (vjp, m)

  def bwd(res, g):
    vjp, m = res
    dq, dk, dv = vjp(g)
    rq, rk = m.any(-1)[..., None, None], m.any(1)[..., None, None]
    return (jnp.where(rq, dq, jnp.nan), jnp.where(rk, dk, jnp.nan), jnp.where(rk, dv, jnp.nan),
            None, None, None, None)

  kernel.defvjp(fwd, bwd)

  def dot_product_attention(q, k, v, *, q_seqlen, kv_seqlen, q_offsets, kv_offsets, scale,
                            mask_type, qkv_layout):
    assert mask_type == fused.MaskType.PADDING and qkv_layout == "BTNH"
    assert scale == pytest.approx(q.shape[-1] ** -0.5)
    return kernel(q, k, v, q_seqlen, kv_seqlen, q_offsets, kv_offsets)

  monkeypatch.setattr(fused, "dot_product_attention", dot_product_attention)


def test_wrapper_zeroes_uncovered_rows_and_poisons_overflow(monkeypatch):
  """Through dot_product_attention(impl='cudnn', max_segments) with the fake kernel: covered
  queries equal XLA with segment ids, in value and in dq/dk/dv; uncovered ones get 0 and finite
  gradients; a row past the bound gets NaN there."""
  _fake_kernel(monkeypatch)
  r = np.random.RandomState(3)
  # row 0: two clips and padding, which reads the one empty slot's null token; row 1: three
  ids = np.array([[1] * 5 + [2] * 6 + [0] * 5, [1] * 3 + [2] * 3 + [3] * 10], np.int32)
  seg, mask = _captions(r, ids, slots=3, L=4)
  q, w = (jnp.asarray(r.randn(2, 16, 2, 8), jnp.float32) for _ in range(2))
  k, v = (jnp.asarray(r.randn(2, 12, 2, 8), jnp.float32) for _ in range(2))

  @jax.jit
  def run(q, k, v, ids, seg, mask):
    def attn(impl, bound, q, k, v, ids=ids, seg=seg, mask=mask):
      return A.dot_product_attention(q, k, v, impl=impl, mask=mask, segment_ids=ids,
                                     kv_segment_ids=seg, max_segments=bound)
    out = {}
    for name, impl, bound in (("cudnn", "cudnn", 3), ("xla", "xla", None)):
      o, vjp = jax.vjp(lambda q, k, v, i=impl, b=bound: attn(i, b, q, k, v), q, k, v)
      out[name] = (o, *vjp(w))
    # self-attention with a bound of 2 runs: each row's third run is past it
    out["self"] = A.dot_product_attention(q, q, q, impl="cudnn", segment_ids=ids, max_segments=2)
    out["self_xla"] = A.dot_product_attention(q, q, q, segment_ids=ids)
    # all padding, and row 1 has no empty slot: nothing to read, so 0 and zero gradient
    o, vjp = jax.vjp(lambda q, k, v: attn("cudnn", 3, q, k, v, ids=jnp.zeros_like(ids)), q, k, v)
    out["pad"] = (o, *vjp(w))
    return out

  out = jax.tree.map(np.asarray, run(q, k, v, ids, seg, mask))
  for a, b in zip(out["cudnn"], out["xla"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for row, n in ((0, 11), (1, 6)):
    np.testing.assert_allclose(out["self"][row, :n], out["self_xla"][row, :n], rtol=1e-5,
                               atol=1e-6)
    assert np.isnan(out["self"][row, n:]).all()
  assert not out["pad"][0][1].any() and out["pad"][0][0].any()
  assert all(np.isfinite(a).all() for a in out["pad"])


def test_packed_path_lowers_for_cuda(monkeypatch):
  """The real private kernel, traced and lowered for CUDA on CPU (its version and GPU checks
  patched): forward and backward are packed custom calls with max_seg_per_batch = the bound, and
  without a bound (or with a 4-D mask) the dense path stays."""
  monkeypatch.setattr(fused, "check_cudnn_version", lambda: 90800)
  monkeypatch.setattr(fused, "check_is_flash_attention", lambda *a, **k: None)
  q = jnp.zeros((2, 32, 2, 16), jnp.bfloat16)
  ids = jnp.asarray(np.repeat([[1, 2, 3, 0]], 8, axis=1).repeat(2, 0))

  def hlo(**kw):
    f = lambda q: jnp.sum(A.dot_product_attention(  # noqa: E731
        q, q, q, impl="cudnn", segment_ids=ids, **kw).astype(jnp.float32))
    return jax.jit(jax.grad(f)).trace(q).lower(lowering_platforms=("cuda",)).as_text()

  text = hlo(max_segments=5).replace("\\22", '"')
  assert "fmhaSoftmax(" in text and "fmhaSoftmaxBackward(" in text
  assert text.count('"max_seg_per_batch": 5') == 2 and '"mask_type": "PADDING"' in text
  dense = hlo().replace("\\22", '"')
  assert '"max_seg_per_batch": 5' not in dense and "fmhaScaleBiasSoftmax" in dense

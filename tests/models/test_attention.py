"""The attention op: key masks, packed segments, and context-parallel (ring / all-gather)
attention equal to full attention, forward and backward, on fake-device meshes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.common import mesh_config
from sora_jax.models import attention as A
from sora_jax.parallel import mesh as mesh_lib

# (data, fsdp, tensor, context): context 8 alone; 4 with data; 2 with fsdp and heads over tensor.
MESHES = {"c8": (1, 1, 1, 8), "d2c4": (2, 1, 1, 4), "f2t2c2": (1, 2, 2, 2)}


def _mesh(name):
  d, f, t, c = MESHES[name]
  return mesh_lib.make_mesh(mesh_config(data=d, fsdp=f, tensor=t, context=c))


def _qkv(shape=(2, 32, 4, 8), dtype=jnp.float32, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(k, shape, dtype) for k in ks)


def _loss(attn):
  # A non-trivial cotangent: weights differ per position so gradients are not symmetric.
  def f(q, k, v):
    out = attn(q, k, v)
    w = jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape) / out.size
    return jnp.sum(jnp.sin(out.astype(jnp.float32)) * w)
  return f


def _reference(q, k, v, causal):
  out = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  grads = jax.grad(_loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal)),
                   argnums=(0, 1, 2))(q, k, v)
  return out, grads


def test_attention_wrapper_masks():
  r = np.random.RandomState(1)
  q, k, v = (jnp.asarray(r.randn(2, n, 2, 8), jnp.float32) for n in (4, 6, 6))
  key_mask = jnp.asarray([[1, 1, 1, 0, 0, 0], [1] * 6], bool)
  got = A.dot_product_attention(q, k, v, mask=key_mask)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  logits = jnp.where(key_mask[:, None, None], logits, -1e30)
  want = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="attention_impl must be"):
    A.dot_product_attention(q, k, v, impl="flash")
  with pytest.raises(ValueError, match="supports only self-attention"):
    A.dot_product_attention(q, k, v, mask=key_mask, impl="ring")


def test_xla_attention_equals_jax_forward_and_grad():
  """The written-out XLA attention (faster backward on CPU) is jax.nn.dot_product_attention,
  with and without a key mask (a fully masked row included), in value and gradient."""
  q, k, v = _qkv((2, 16, 3, 8), seed=4)
  key_mask = jnp.asarray([[True] * 5 + [False] * 11, [False] * 16])
  for mask in (None, key_mask[:, None, None, :]):
    ref = lambda q, k, v, m=mask: jax.nn.dot_product_attention(q, k, v, mask=m)  # noqa: E731
    ours = lambda q, k, v, m=mask: A.xla_attention(q, k, v, m)  # noqa: E731
    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
    g_ref = jax.grad(_loss(ref), argnums=(0, 1, 2))(q, k, v)
    g_ours = jax.grad(_loss(ours), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_ours, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  qb, kb, vb = (a.astype(jnp.bfloat16) for a in (q, k, v))
  out = A.xla_attention(qb, kb, vb)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), A.xla_attention(q, k, v), atol=5e-2)


def test_segment_ids_equal_each_segment_alone():
  """Packed attention over [seg 0 | seg 1 | seg 2] equals attending each segment on its own."""
  r = np.random.RandomState(2)
  lens = (5, 3, 4)
  q, k, v = (jnp.asarray(r.randn(2, sum(lens), 2, 8), jnp.float32) for _ in range(3))
  seg = jnp.asarray(np.repeat(np.arange(3), lens)[None].repeat(2, 0))
  got = jax.jit(lambda q, k, v, s: A.dot_product_attention(q, k, v, segment_ids=s))(q, k, v, seg)
  start = 0
  for n in lens:
    sl = slice(start, start + n)
    want = jax.nn.dot_product_attention(q[:, sl], k[:, sl], v[:, sl])
    np.testing.assert_allclose(got[:, sl], want, rtol=1e-5, atol=1e-6)
    start += n
  # one segment everywhere is plain attention; a key mask still applies on top of segments
  np.testing.assert_allclose(A.dot_product_attention(q, k, v, segment_ids=jnp.zeros_like(seg)),
                             jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
  key_mask = jnp.arange(sum(lens))[None].repeat(2, 0) != 1
  masked = A.dot_product_attention(q, k, v, mask=key_mask, segment_ids=seg)
  want0 = jax.nn.dot_product_attention(q[:, :5], k[:, :5], v[:, :5],
                                       mask=key_mask[:, None, None, :5])
  np.testing.assert_allclose(masked[:, :5], want0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(masked[:, 5:], got[:, 5:], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="supports only self-attention"):
    A.dot_product_attention(q, k, v, segment_ids=seg, kv_segment_ids=seg, impl="ring")


@pytest.mark.parametrize("mesh_name,impl", [("c8", "ring"), ("d2c4", "allgather"),
                                            ("f2t2c2", "ring")])
def test_context_parallel_segments_equal_xla_fwd_and_grad(mesh_name, impl):
  """Packed clips whose segments straddle the context shards: ring / all-gather attention with
  segment ids equals masked XLA attention, forward and gradient (no N x N mask on the ring)."""
  mesh = _mesh(mesh_name)
  q, k, v = _qkv((2, 32, 4, 8), seed=9)
  lens = [(7, 13, 9, 3), (20, 12, 0, 0)]   # row 1: two clips; 3 trailing padding tokens in row 0
  seg = jnp.asarray([np.repeat(np.arange(1, 5), l)[:32] for l in lens])
  ref_fn = lambda q, k, v: A.dot_product_attention(q, k, v, segment_ids=seg)  # noqa: E731
  ours = lambda q, k, v: A.dot_product_attention(q, k, v, segment_ids=seg, impl=impl)  # noqa
  ref, g_ref = ref_fn(q, k, v), jax.grad(_loss(ref_fn), argnums=(0, 1, 2))(q, k, v)
  with jax.set_mesh(mesh):
    out = jax.jit(ours)(q, k, v)
    g = jax.jit(jax.grad(_loss(ours), argnums=(0, 1, 2)))(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_op_dispatches_context_impls():
  """impl='ring' / 'allgather' through the op equal XLA attention on a context mesh."""
  mesh = _mesh("d2c4")
  q, k, v = _qkv(seed=6)
  ref = A.dot_product_attention(q, k, v)
  for impl in A.CONTEXT_IMPLS:
    with jax.set_mesh(mesh):
      out = jax.jit(lambda q, k, v, impl=impl: A.dot_product_attention(q, k, v, impl=impl))(q, k, v)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5, err_msg=impl)
    assert out.sharding.spec[1] == "context"


@pytest.mark.parametrize("mesh_name,impl,causal", [
    ("c8", "ring", False), ("c8", "allgather", False),
    ("d2c4", "ring", False), ("d2c4", "allgather", True), ("d2c4", "ring", True),
    ("f2t2c2", "ring", False), ("f2t2c2", "allgather", False),
])
def test_equals_full_attention_fwd_and_grad(mesh_name, impl, causal):
  mesh = _mesh(mesh_name)
  q, k, v = _qkv()
  ref_out, ref_grads = _reference(q, k, v, causal)
  attn = lambda q, k, v: A.context_attention(q, k, v, impl=impl, causal=causal)  # noqa: E731

  @jax.jit
  def fwd_bwd(q, k, v):
    return attn(q, k, v), jax.grad(_loss(attn), argnums=(0, 1, 2))(q, k, v)

  with jax.set_mesh(mesh):
    out, grads = fwd_bwd(q, k, v)
  np.testing.assert_allclose(out, ref_out, atol=2e-6, rtol=1e-5)
  for g, rg, name in zip(grads, ref_grads, "qkv"):
    np.testing.assert_allclose(g, rg, atol=2e-6, rtol=1e-5, err_msg=f"d{name}")
  # the output stays split over the sequence: it was never gathered
  assert out.sharding.spec[1] == "context"


def test_sharded_inputs_and_explicit_mesh_under_jit():
  mesh = _mesh("f2t2c2")
  spec = P(("data", "fsdp"), "context", "tensor", None)
  q, k, v = (jax.device_put(x, NamedSharding(mesh, spec)) for x in _qkv(seed=1))
  ref = jax.nn.dot_product_attention(q, k, v)
  # mesh passed explicitly, no jax.set_mesh
  out = jax.jit(lambda q, k, v: A.context_attention(q, k, v, mesh=mesh))(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), 4)
  assert out.addressable_shards[0].data.shape == (1, 16, 2, 8)


def test_batch_and_heads_that_do_not_divide_are_replicated():
  mesh = _mesh("d2c4")  # batch 1 (sampling) cannot split over data=2; 3 heads stay whole
  q, k, v = _qkv((1, 16, 3, 8), seed=2)
  with jax.set_mesh(mesh):
    out = jax.jit(lambda q, k, v: A.context_attention(q, k, v, impl="ring"))(q, k, v)
  np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v), atol=2e-6, rtol=1e-5)


def test_bfloat16_inputs_keep_dtype_and_match():
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 64, 2, 16), jnp.bfloat16, seed=3)
  with jax.set_mesh(mesh):
    out = jax.jit(lambda q, k, v: A.context_attention(q, k, v, impl="ring"))(q, k, v)
  assert out.dtype == jnp.bfloat16
  ref = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)


def test_falls_back_without_context_axis():
  q, k, v = _qkv((2, 12, 2, 8), seed=4)
  ref = jax.nn.dot_product_attention(q, k, v)
  np.testing.assert_array_equal(A.context_attention(q, k, v), ref)  # no mesh set
  with jax.set_mesh(mesh_lib.make_mesh(mesh_config(data=-1))):  # context=1
    out = jax.jit(lambda q, k, v: A.context_attention(q, k, v, impl="ring"))(q, k, v)
  np.testing.assert_allclose(out, ref, atol=1e-6)


def test_ring_scan_has_no_score_residual():
  """Gradient memory: the backward pass never keeps a full [B, H, N_local, N] score matrix."""
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 256, 1, 8), seed=5)
  f = jax.jit(jax.grad(_loss(lambda q, k, v: A.context_attention(q, k, v, mesh=mesh)),
                       argnums=(0, 1, 2)))
  hlo = f.lower(q, k, v).compile().as_text()
  # per device: N_local = 32; a full row block against all 256 keys would be f32[1,1,32,256]
  assert "f32[1,1,32,256]" not in hlo
  assert "f32[1,1,32,32]" in hlo


def test_errors():
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 12, 2, 8))
  with pytest.raises(ValueError, match=r"12 tokens does not divide over mesh\.context=8"):
    A.context_attention(q, k, v, mesh=mesh)
  with pytest.raises(ValueError, match="impl 'flash' is not known"):
    A.context_attention(q, k, v, impl="flash", mesh=mesh)
  with pytest.raises(ValueError, match="one shape"):
    A.context_attention(q, k[:, :4], v, mesh=mesh)


def test_models_never_import_parallel():
  """Layering: models sit below parallel; the context-parallel op reads the mesh from jax."""
  import ast
  import pathlib

  import sora_jax.models
  offenders = []
  for path in pathlib.Path(sora_jax.models.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      offenders += [f"{path.name}: {n}" for n in names if n.startswith("sora_jax.parallel")]
  assert not offenders, offenders

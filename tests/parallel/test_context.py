"""Context-parallel attention equals full attention, forward and backward, on fake-device meshes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.common import mesh_config
from sora_jax.parallel import context as cx
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


@pytest.mark.parametrize("mesh_name,impl,causal", [
    ("c8", "ring", False), ("c8", "allgather", False),
    ("d2c4", "ring", False), ("d2c4", "allgather", True), ("d2c4", "ring", True),
    ("f2t2c2", "ring", False), ("f2t2c2", "allgather", False),
])
def test_equals_full_attention_fwd_and_grad(mesh_name, impl, causal):
  mesh = _mesh(mesh_name)
  q, k, v = _qkv()
  ref_out, ref_grads = _reference(q, k, v, causal)
  attn = lambda q, k, v: cx.context_attention(q, k, v, impl=impl, causal=causal)  # noqa: E731

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
  out = jax.jit(lambda q, k, v: cx.context_attention(q, k, v, mesh=mesh))(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), 4)
  assert out.addressable_shards[0].data.shape == (1, 16, 2, 8)


def test_batch_and_heads_that_do_not_divide_are_replicated():
  mesh = _mesh("d2c4")  # batch 1 (sampling) cannot split over data=2; 3 heads stay whole
  q, k, v = _qkv((1, 16, 3, 8), seed=2)
  with jax.set_mesh(mesh):
    out = jax.jit(lambda q, k, v: cx.context_attention(q, k, v, impl="ring"))(q, k, v)
  np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v), atol=2e-6, rtol=1e-5)


def test_bfloat16_inputs_keep_dtype_and_match():
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 64, 2, 16), jnp.bfloat16, seed=3)
  with jax.set_mesh(mesh):
    out = jax.jit(lambda q, k, v: cx.context_attention(q, k, v, impl="ring"))(q, k, v)
  assert out.dtype == jnp.bfloat16
  ref = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)


def test_falls_back_without_context_axis():
  q, k, v = _qkv((2, 12, 2, 8), seed=4)
  ref = jax.nn.dot_product_attention(q, k, v)
  np.testing.assert_array_equal(cx.context_attention(q, k, v), ref)  # no mesh set
  with jax.set_mesh(mesh_lib.make_mesh(mesh_config(data=-1))):  # context=1
    out = jax.jit(lambda q, k, v: cx.context_attention(q, k, v, impl="ring"))(q, k, v)
  np.testing.assert_allclose(out, ref, atol=1e-6)


def test_ring_scan_has_no_score_residual():
  """Gradient memory: the backward pass never keeps a full [B, H, N_local, N] score matrix."""
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 256, 1, 8), seed=5)
  f = jax.jit(jax.grad(_loss(lambda q, k, v: cx.context_attention(q, k, v, mesh=mesh)),
                       argnums=(0, 1, 2)))
  hlo = f.lower(q, k, v).compile().as_text()
  # per device: N_local = 32; a full row block against all 256 keys would be f32[1,1,32,256]
  assert "f32[1,1,32,256]" not in hlo
  assert "f32[1,1,32,32]" in hlo


def test_errors():
  mesh = _mesh("c8")
  q, k, v = _qkv((1, 12, 2, 8))
  with pytest.raises(ValueError, match=r"12 tokens does not divide over mesh\.context=8"):
    cx.context_attention(q, k, v, mesh=mesh)
  with pytest.raises(ValueError, match="impl 'flash' is not known"):
    cx.context_attention(q, k, v, impl="flash", mesh=mesh)
  with pytest.raises(ValueError, match="one shape"):
    cx.context_attention(q, k[:, :4], v, mesh=mesh)

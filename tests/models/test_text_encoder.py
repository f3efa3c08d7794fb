"""Bundled text encoder: shapes, padding isolation, logical axes, caption dropout."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import text_encoder as te

B, L = 3, 12


@pytest.fixture(scope="module")
def enc_and_params():
  enc = te.TextEncoder(vocab_size=259, width=32, depth=2, heads=4, max_len=16)
  tokens = jnp.ones((B, L), jnp.int32)
  variables = jax.jit(enc.init)(jax.random.key(0), tokens, jnp.ones((B, L), bool))
  return enc, variables, jax.jit(enc.apply)


def _batch(seed=1):
  tokens = jax.random.randint(jax.random.key(seed), (B, L), 1, 259)
  lengths = jnp.array([12, 5, 1])
  mask = jnp.arange(L)[None] < lengths[:, None]
  return jnp.where(mask, tokens, 0), mask


def test_shape_finite_and_pads_zero(enc_and_params):
  enc, variables, apply = enc_and_params
  tokens, mask = _batch()
  out = apply(variables, tokens, mask)
  assert out.shape == (B, L, 32)
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out[1, 5:], 0.0)
  assert float(jnp.abs(out[1, :5]).min()) > 0


def test_padding_does_not_affect_valid_positions(enc_and_params):
  _, variables, apply = enc_and_params
  tokens, mask = _batch()
  junk = jax.random.randint(jax.random.key(9), (B, L), 1, 259)
  out = apply(variables, tokens, mask)
  out2 = apply(variables, jnp.where(mask, tokens, junk), mask)
  np.testing.assert_allclose(out2, out, atol=1e-5)
  # and the valid tokens do matter
  out3 = apply(variables, tokens.at[0, 3].set((tokens[0, 3] + 7) % 259), mask)
  assert not np.allclose(out3[0], out[0], atol=1e-4)
  # a shorter caption's outputs equal those of the same caption padded further
  np.testing.assert_allclose(apply(variables, tokens[1:2, :5], mask[1:2, :5]), out[1:2, :5],
                             atol=1e-5)


def test_logical_axis_names(enc_and_params):
  _, variables, _ = enc_and_params
  specs = nn.get_partition_spec(variables)["params"]
  assert tuple(specs["token_embed"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["block_0"]["query"]["kernel"]) == ("embed", "heads")
  assert tuple(specs["block_0"]["out"]["kernel"]) == ("heads", "embed")
  assert tuple(specs["block_1"]["mlp_in"]["kernel"]) == ("embed", "mlp")


def test_too_long_caption_errors(enc_and_params):
  enc, variables, _ = enc_and_params
  with pytest.raises(ValueError, match="max_len"):
    enc.apply(variables, jnp.ones((1, 20), jnp.int32), jnp.ones((1, 20), bool))


def test_drop_text_and_null_text(enc_and_params):
  _, variables, apply = enc_and_params
  tokens, mask = _batch()
  nt, nm = te.null_text(B, L)
  assert nt.dtype == jnp.int32 and np.all(np.asarray(nt) == 0)
  np.testing.assert_array_equal(nm.sum(1), [1, 1, 1])
  t0, m0 = te.drop_text(jax.random.key(0), tokens, mask, 0.0)
  np.testing.assert_array_equal(t0, tokens)
  np.testing.assert_array_equal(m0, mask)
  t1, m1 = te.drop_text(jax.random.key(0), tokens, mask, 1.0)
  np.testing.assert_array_equal(t1, nt)
  np.testing.assert_array_equal(m1, nm)
  # the null caption encodes to one finite embedding, the same for every row
  null_out = apply(variables, nt, nm)
  assert np.all(np.isfinite(null_out))
  np.testing.assert_allclose(null_out[0], null_out[2], atol=1e-6)
  # the drop rate is honoured per row
  big = jnp.ones((4000, 4), jnp.int32)
  _, md = te.drop_text(jax.random.key(3), big, jnp.ones((4000, 4), bool), 0.1)
  rate = float(jnp.mean(md.sum(1) == 1))
  assert rate == pytest.approx(0.1, abs=0.02)


def test_gradients_flow_and_bf16(enc_and_params):
  enc, variables, apply = enc_and_params
  tokens, mask = _batch()
  g = jax.jit(jax.grad(lambda v: jnp.sum(enc.apply(v, tokens, mask) ** 2)))(variables)
  gnorms = jax.tree.leaves(jax.tree.map(lambda x: float(jnp.abs(x).sum()), nn.unbox(g)))
  assert all(np.isfinite(gnorms)) and sum(gnorms) > 0
  enc16 = enc.clone(dtype=jnp.bfloat16)
  out16 = jax.jit(enc16.apply)(variables, tokens, mask)
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out16, np.float32),
                             apply(variables, tokens, mask), atol=0.1)

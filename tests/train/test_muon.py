"""train/muon.py: Muon with its Newton-Schulz iteration on the Gram matrix is optax.contrib.muon
— same orthogonalisation to float32 precision (full-rank and low-rank momenta), same updates over
several steps, same state tree (checkpoints move between the two)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

from sora_jax.train import muon
from sora_jax.train import optimizer as optim_lib


def _matrix(shape, rank, noise, seed=0):
  rng = np.random.default_rng(seed)
  m, n = shape
  x = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
  return x + noise * rng.standard_normal((m, n))


@pytest.mark.parametrize("shape,rank,noise", [((96, 24), 24, 0.0), ((24, 96), 2, 1e-3),
                                              ((64, 200), 4, 1e-5), ((40, 64), 3, 1e-3)])
def test_gram_iteration_is_as_close_to_float64_as_optax_is(shape, rank, noise):
  x = _matrix(shape, rank, noise)
  coeffs = np.asarray(muon.NS_COEFFS)
  # The float64 reference: optax's own iteration in numpy (jax runs without x64 here).
  y = x.T if x.shape[0] > x.shape[1] else x
  y = y / (np.linalg.norm(y) + 1e-8)
  for _ in range(muon.NS_STEPS):
    a = y @ y.T
    y = coeffs[0] * y + (coeffs[1] * a + coeffs[2] * a @ a) @ y
  ref = y.T if x.shape[0] > x.shape[1] else y
  # optax's own iteration in float32 (jitted), through its public transform: one step of
  # scale_by_muon with beta 0 and nesterov off is the orthogonalised gradient
  x32 = jnp.asarray(x, jnp.float32)
  ours = np.asarray(jax.jit(muon.newton_schulz_gram)(x32), np.float64)
  plain = optax.contrib.scale_by_muon(beta=0.0, nesterov=False)
  theirs = np.asarray(jax.jit(lambda v: plain.update(v, plain.init(v))[0])(x32), np.float64)
  err = lambda v: np.linalg.norm(v - ref) / np.linalg.norm(ref)  # noqa: E731
  assert err(ours) < max(3 * err(theirs), 2e-5), (err(ours), err(theirs))


def _params():
  rng = np.random.default_rng(1)
  return {"conv": jnp.asarray(rng.standard_normal((3, 3, 6, 8)), jnp.float32),
          "scanned": jnp.asarray(rng.standard_normal((2, 12, 5)), jnp.float32),
          "bias": jnp.asarray(rng.standard_normal((5,)), jnp.float32)}


DIMS = {"conv": MuonDimensionNumbers((0, 1, 2), 3), "scanned": MuonDimensionNumbers((1,), 2),
        "bias": None}


def test_updates_and_state_match_optax_muon_over_steps():
  params = _params()
  kw = dict(weight_decay=0.1, weight_decay_mask={"conv": True, "scanned": True, "bias": False})
  ours = muon.muon(3e-3, 1e-3, DIMS, **kw)
  theirs = optax.contrib.muon(3e-3, adam_learning_rate=1e-3, adam_weight_decay=0.0,
                              muon_weight_dimension_numbers=DIMS, **kw)
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
  p_ours = p_theirs = params
  rng = np.random.default_rng(2)
  for _ in range(4):
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    u_ours, s_ours = jax.jit(ours.update)(g, s_ours, p_ours)
    u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, p_theirs)
    for k in params:
      np.testing.assert_allclose(u_ours[k], u_theirs[k], rtol=1e-4, atol=1e-6, err_msg=k)
    p_ours, p_theirs = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s_ours, s_theirs)


def test_boxed_trees_give_optax_muon_state_and_updates():
  """make_optimizer initialises from boxed params (moments inherit the boxes) and the dims are a
  prefix of that tree: the state and the updates still match optax.contrib.muon's."""
  names = {"conv": (None, None, "conv_in", "conv_out"), "scanned": ("layers", "embed", "mlp"),
           "bias": ("mlp",)}
  boxed = {k: nn.Partitioned(v, names[k]) for k, v in _params().items()}
  dims = optim_lib.muon_dimension_numbers(boxed)
  assert dims == DIMS
  ours, theirs = muon.muon(1e-3, 1e-3, dims), optax.contrib.muon(
      1e-3, muon_weight_dimension_numbers=dims)
  s_ours, s_theirs = ours.init(boxed), theirs.init(boxed)
  assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
  grads = jax.tree.map(lambda x: x * 0.5 + 1.0, boxed)
  u_ours, _ = jax.jit(ours.update)(grads, s_ours, boxed)
  u_theirs, _ = jax.jit(theirs.update)(grads, s_theirs, boxed)
  assert isinstance(u_ours["conv"], nn.Partitioned)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               nn.unbox(u_ours), nn.unbox(u_theirs))

"""Optimizers from config: AdamW and Muon (orthogonalised updates for matrices and conv kernels)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from configs import common
from sora_jax import config as config_lib
from sora_jax.train import state as state_lib


def _boxed_params():
  key = jax.random.key(0)
  box = lambda shape, names: nn.Partitioned(jax.random.normal(key, shape), names)  # noqa: E731
  return {
      "conv": box((3, 3, 3, 4, 8), (None, None, None, "conv_in", "conv_out")),
      "scanned": box((2, 6, 5), ("layers", "embed", "mlp")),
      "dense": box((6, 5), ("embed", "mlp")),
      "bias": box((5,), ("mlp",)),
      "embedding": box((11, 6), ("vocab", "embed")),
  }


def test_muon_dimension_numbers_follow_logical_names():
  dims = nn.unbox(state_lib.muon_dimension_numbers(_boxed_params()))
  assert dims["conv"].reduction_axis == (0, 1, 2, 3) and dims["conv"].output_axis == 4
  assert dims["scanned"].reduction_axis == (1,) and dims["scanned"].output_axis == 2
  assert dims["dense"].reduction_axis == (0,) and dims["dense"].output_axis == 1
  assert dims["bias"] is None and dims["embedding"] is None


def _optim(name):
  cfg = common.optim_config(lr=1e-3, steps=10, warmup=0, name=name)
  cfg.schedule = "constant"
  return cfg


def test_muon_orthogonalises_matrix_updates_and_keeps_boxes():
  params = _boxed_params()
  tx, _ = state_lib.make_optimizer(_optim("muon"), 10)
  state = tx.init(params)
  grads = jax.tree.map(lambda x: x * 0 + jax.random.normal(jax.random.key(3), x.shape), params)
  updates, _ = tx.update(grads, state, params)
  dense = np.asarray(nn.unbox(updates)["dense"])
  sv = np.linalg.svd(dense, compute_uv=False)
  # Newton-Schulz pushes every singular value towards the same value (Adam would not).
  assert sv.min() / sv.max() > 0.5, sv
  adam_tx, _ = state_lib.make_optimizer(_optim("adamw"), 10)
  adam_up, _ = adam_tx.update(grads, adam_tx.init(params), params)
  adam_sv = np.linalg.svd(np.asarray(nn.unbox(adam_up)["dense"]), compute_uv=False)
  assert adam_sv.min() / adam_sv.max() < sv.min() / sv.max()
  assert isinstance(updates["conv"], nn.Partitioned)  # shardings still follow the names


def test_muon_minimises_a_least_squares_problem():
  rng = np.random.default_rng(0)
  a, b = jnp.asarray(rng.normal(size=(32, 6))), jnp.asarray(rng.normal(size=(32, 5)))
  params = {"w": nn.Partitioned(jnp.zeros((6, 5)), ("embed", "mlp"))}
  cfg = _optim("muon")
  cfg.muon_lr = 0.05
  tx, _ = state_lib.make_optimizer(cfg, 200)
  loss = lambda p: jnp.mean((a @ nn.unbox(p)["w"] - b) ** 2)  # noqa: E731
  state, first = tx.init(params), float(loss(params))
  for _ in range(100):
    g = jax.grad(loss)(params)
    up, state = tx.update(g, state, params)
    params = optax.apply_updates(params, up)
  optimum = float(jnp.mean((a @ jnp.linalg.lstsq(a, b)[0] - b) ** 2))
  assert float(loss(params)) < optimum + 0.1 * (first - optimum)


@pytest.mark.parametrize("over,key", [({"name": "sgd"}, "optim.name"),
                                      ({"name": "muon", "muon_lr": 0.0}, "optim.muon_lr")])
def test_bad_optimizer_settings_name_the_key(over, key):
  from configs import vae as vae_config
  c = vae_config.get_config("runlocal").unlock()
  c.optim.update(over)
  with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
    config_lib.validate(c, num_devices=1)

"""Optimizers from config: AdamW and Muon (orthogonalised updates for matrices and conv kernels),
the weight-decay mask (the same with and without scanned layers) and per-player clipping."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from configs import common
from sora_jax import config as config_lib
from sora_jax.models import dit as dit_lib
from sora_jax.train import optimizer as optim_lib
from sora_jax.train import state as state_lib


def _boxed_params():
  rng = np.random.default_rng(0)  # numpy: eager jax.random compiles once per shape
  box = lambda shape, names: nn.Partitioned(  # noqa: E731
      jnp.asarray(rng.standard_normal(shape), jnp.float32), names)
  return {
      "conv": box((3, 3, 3, 4, 8), (None, None, None, "conv_in", "conv_out")),
      "scanned": box((2, 6, 5), ("layers", "embed", "mlp")),
      "dense": box((6, 5), ("embed", "mlp")),
      "bias": box((5,), ("mlp",)),
      "embedding": box((11, 6), ("vocab", "embed")),
  }


def test_muon_dimension_numbers_follow_logical_names():
  dims = optim_lib.muon_dimension_numbers(_boxed_params())
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
  tx, _ = optim_lib.make_optimizer(_optim("muon"), 10, params)
  state = tx.init(params)
  rng = np.random.default_rng(3)
  grads = jax.tree.map(lambda x: x * 0 + rng.standard_normal(x.shape).astype(x.dtype), params)
  updates, _ = jax.jit(tx.update)(grads, state, params)  # boxed in, boxed out
  dense = np.asarray(nn.unbox(updates)["dense"])
  sv = np.linalg.svd(dense, compute_uv=False)
  # Newton-Schulz pushes every singular value towards the same value (Adam would not).
  assert sv.min() / sv.max() > 0.5, sv
  adam_tx, _ = optim_lib.make_optimizer(_optim("adamw"), 10, params)
  adam_up, _ = jax.jit(adam_tx.update)(grads, adam_tx.init(params), params)
  adam_sv = np.linalg.svd(np.asarray(nn.unbox(adam_up)["dense"]), compute_uv=False)
  assert adam_sv.min() / adam_sv.max() < sv.min() / sv.max()
  assert isinstance(updates["conv"], nn.Partitioned)  # shardings still follow the names


def test_muon_minimises_a_least_squares_problem():
  rng = np.random.default_rng(0)
  a, b = jnp.asarray(rng.normal(size=(32, 6))), jnp.asarray(rng.normal(size=(32, 5)))
  params = {"w": nn.Partitioned(jnp.zeros((6, 5)), ("embed", "mlp"))}
  cfg = _optim("muon")
  cfg.muon_lr = 0.05
  tx, _ = optim_lib.make_optimizer(cfg, 200, params)
  loss = lambda p: jnp.mean((a @ nn.unbox(p)["w"] - b) ** 2)  # noqa: E731
  state, first = tx.init(params), float(loss(params))

  @jax.jit
  def step(params, state):
    up, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, up), state

  for _ in range(100):
    params, state = step(params, state)
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


# -- the decay mask under scanned and unrolled layers -------------------------------------------

DEPTH = 2


def _dit(scan: bool):
  return dit_lib.DiT(width=32, depth=DEPTH, heads=2, patch=(1, 2, 2), in_channels=4,
                     cond="class", num_classes=3, remat_policy="none", scan_layers=scan)


@functools.lru_cache(maxsize=None)
def _abstract_dit(scan: bool):
  """The boxed abstract params (what make_optimizer gets from jax.eval_shape)."""
  x, t, labels = jnp.zeros((1, 1, 4, 4, 4)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
  return jax.eval_shape(lambda r: _dit(scan).init(r, x, t, labels=labels)["params"],
                        jax.random.key(0))


def _unstack(scanned):
  """Scanned tree {'blocks': [layers, ...]} -> unrolled {'blocks_0': ..., 'blocks_1': ...}."""
  out = {k: v for k, v in scanned.items() if k != "blocks"}
  for i in range(DEPTH):
    out[f"blocks_{i}"] = jax.tree.map(lambda a: np.asarray(a)[i], scanned["blocks"])
  return out


def _stack(unrolled):
  out = {k: v for k, v in unrolled.items() if not k.startswith("blocks_")}
  out["blocks"] = jax.tree.map(lambda *a: np.stack(a), *[unrolled[f"blocks_{i}"]
                                                         for i in range(DEPTH)])
  return out


def _decayed_paths(mask):
  return {jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_leaves_with_path(mask) if m}


def test_decay_mask_is_the_same_scanned_and_unrolled():
  scanned = optim_lib.decay_mask(_abstract_dit(True))
  unrolled = optim_lib.decay_mask(_abstract_dit(False))
  as_unrolled = {k: v for k, v in scanned.items() if k != "blocks"}
  as_unrolled.update({f"blocks_{i}": scanned["blocks"] for i in range(DEPTH)})
  assert _decayed_paths(as_unrolled) == _decayed_paths(unrolled)
  assert jax.tree.structure(scanned) == jax.tree.structure(
      state_lib.unbox(_abstract_dit(True), apply_constraint=False))
  # Muon reads each scanned layer as its own matrix: the same matrix as unrolled, shifted by one.
  dims_s = optim_lib.muon_dimension_numbers(_abstract_dit(True))["blocks"]["mlp"]["up"]["kernel"]
  dims_u = optim_lib.muon_dimension_numbers(_abstract_dit(False))["blocks_0"]["mlp"]["up"]
  assert (dims_s.reduction_axis, dims_s.output_axis) == ((1,), 2)
  assert (dims_u["kernel"].reduction_axis, dims_u["kernel"].output_axis) == ((0,), 1)


def test_biases_norm_scales_and_tables_are_not_decayed_under_scan():
  abstract = _abstract_dit(True)
  mask = optim_lib.decay_mask(abstract)
  old_rule = jax.tree.map(lambda x: x.ndim > 1, state_lib.unbox(abstract, apply_constraint=False))
  leaves = jax.tree_util.tree_leaves_with_path(mask)
  not_matrices = [jax.tree_util.keystr(p) for p, _ in leaves
                  if jax.tree_util.keystr(p).endswith(("['bias']", "['scale']", "_embed']"))]
  blocks = [p for p in not_matrices if p.startswith("['blocks']")]
  assert len(blocks) == 7, not_matrices  # adaLN, q/k/v/out biases, q/k norm scales
  by_path = {jax.tree_util.keystr(p): m for p, m in leaves}
  old = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(old_rule)}
  assert not any(by_path[p] for p in not_matrices), [p for p in not_matrices if by_path[p]]
  assert all(old[p] for p in blocks)  # the ndim > 1 rule decayed every stacked one
  kernels = [p for p in by_path if p.endswith("['kernel']")]
  assert kernels and all(by_path[p] for p in kernels)


def _values(abstract, seed):
  """Random numpy leaves (numpy: eager jax.random would compile once per leaf shape)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype),
                      state_lib.unbox(abstract, apply_constraint=False))


def _rebox(abstract, values):
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  return jax.tree.map(lambda b, v: b.replace_boxed(v), abstract, values, is_leaf=is_box)


@functools.lru_cache(maxsize=None)
def _step_fn(name: str, scan: bool, wd: float = 0.1):
  """jit(init + one update) for the tiny DiT: make_optimizer from the abstract boxed params,
  init on BOXED params (as state.make_init_fn), update on plain arrays (as the train step, whose
  state is unboxed). Cached: tests that only change the values reuse one compilation."""
  abstract = _abstract_dit(scan)
  cfg = _optim(name)
  cfg.weight_decay, cfg.grad_clip = wd, 0.0
  tx, _ = optim_lib.make_optimizer(cfg, 10, abstract)

  @jax.jit
  def step(params, grads):
    opt_state = state_lib.unbox(tx.init(_rebox(abstract, params)), apply_constraint=False)
    updates, new_state = tx.update(grads, opt_state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(opt_state)
    return optax.apply_updates(params, updates)

  return step


def test_one_adamw_step_is_the_same_scanned_and_unrolled():
  unrolled = _values(_abstract_dit(False), 0)
  grads = _values(_abstract_dit(False), 1)
  new_u = _step_fn("adamw", False)(unrolled, grads)
  new_s = _step_fn("adamw", True)(_stack(unrolled), _stack(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _unstack(new_s), new_u)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_zero_gradients_decay_only_matrices_under_scan(name):
  abstract = _abstract_dit(True)
  params = _values(abstract, 0)
  new = _step_fn(name, True)(params, jax.tree.map(np.zeros_like, params))
  lr = 1e-3 if name == "adamw" else common.optim_config(1e-3, 10, 0).muon_lr
  mask = optim_lib.decay_mask(abstract)
  jax.tree.map(lambda m, p, q: np.testing.assert_allclose(q, p * (1 - lr * 0.1) if m else p,
                                                          rtol=1e-6), mask, params, new)


def test_one_muon_step_is_the_same_scanned_and_unrolled():
  """Each scanned layer is orthogonalised as its own matrix, its stacked bias goes to AdamW."""
  rng = np.random.default_rng(0)
  w, b = rng.standard_normal((2, 6, 5)), rng.standard_normal((2, 5))
  gw, gb = rng.standard_normal((2, 6, 5)), rng.standard_normal((2, 5))
  scanned = {"blocks": {"kernel": nn.Partitioned(w, ("layers", "embed", "mlp")),
                        "bias": nn.Partitioned(b, ("layers", "mlp"))}}
  unrolled = {f"blocks_{i}": {"kernel": nn.Partitioned(w[i], ("embed", "mlp")),
                              "bias": nn.Partitioned(b[i], ("mlp",))} for i in range(2)}
  grads_s = {"blocks": {"kernel": gw, "bias": gb}}
  grads_u = {f"blocks_{i}": {"kernel": gw[i], "bias": gb[i]} for i in range(2)}
  cfg = _optim("muon")
  cfg.weight_decay = 0.1
  out = []
  for boxed, grads in ((scanned, grads_s), (unrolled, grads_u)):
    tx, _ = optim_lib.make_optimizer(cfg, 10, boxed)

    @jax.jit
    def step(boxed, grads, tx=tx):
      params = state_lib.unbox(boxed, apply_constraint=False)
      state = state_lib.unbox(tx.init(boxed), apply_constraint=False)
      return optax.apply_updates(params, tx.update(grads, state, params)[0])

    out.append(step(boxed, grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _unstack(out[0]), out[1])


def test_muon_adamw_part_uses_the_mask():
  """optax's Muon decays its AdamW part with no mask; ours decays exactly the masked leaves."""
  params = {k: v for k, v in _boxed_params().items() if k in ("dense", "bias", "embedding")}
  mask = {"dense": True, "bias": False, "embedding": True}  # 'embedding' is in the AdamW part
  cfg = _optim("muon")
  cfg.weight_decay = 0.1
  tx = optim_lib._muon(cfg, optim_lib.lr_schedule(cfg, 10), params, mask)  # noqa: SLF001
  plain = nn.unbox(params)

  @jax.jit
  def step(boxed, plain):
    state = state_lib.unbox(tx.init(boxed), apply_constraint=False)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, plain), state, plain)
    return optax.apply_updates(plain, updates)

  new = step(params, plain)
  np.testing.assert_allclose(new["embedding"], plain["embedding"] * (1 - 1e-3 * 0.1), rtol=1e-6)
  np.testing.assert_allclose(new["dense"], plain["dense"] * (1 - cfg.muon_lr * 0.1), rtol=1e-6)
  np.testing.assert_array_equal(new["bias"], plain["bias"])


# -- clipping each player by its own norm --------------------------------------------------------

def _players_grads():
  return {"vae": {"w": jnp.full((4,), 0.05)},     # norm 0.1
          "disc": {"w": jnp.full((4,), 50.0)},    # norm 100
          "aux": {"w": jnp.full((4,), 1.5)}}      # norm 3


def test_each_player_is_clipped_by_its_own_norm():
  g = _players_grads()
  norm = lambda t: float(optax.global_norm(t))  # noqa: E731
  out, _ = optim_lib.clip_by_player_norm(1.0, ("vae", "disc")).update(g, optax.EmptyState())
  np.testing.assert_array_equal(out["vae"]["w"], g["vae"]["w"])  # small: untouched
  assert abs(norm(out["disc"]) - 1.0) < 1e-6 and abs(norm(out["aux"]) - 1.0) < 1e-6
  # Keys not listed are clipped together: disc and aux share one norm.
  out, _ = optim_lib.clip_by_player_norm(1.0, ("vae",)).update(g, optax.EmptyState())
  np.testing.assert_array_equal(out["vae"]["w"], g["vae"]["w"])
  np.testing.assert_allclose(norm({"d": out["disc"], "a": out["aux"]}), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out["disc"]["w"] / out["aux"]["w"], 50.0 / 1.5, rtol=1e-6)
  # One global norm shrinks the VAE by the critic's gradients.
  out, _ = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())
  np.testing.assert_allclose(out["vae"]["w"], g["vae"]["w"] / norm(g), rtol=1e-6)


@pytest.mark.parametrize("players", [None, ("vae", "disc")])
def test_make_optimizer_clips_per_player(players):
  """A first Adam step with a huge eps is -lr * g / (|g| + eps): it shows the clipped g."""
  g = {k: v for k, v in _players_grads().items() if k != "aux"}
  params = {k: {"w": nn.Partitioned(jnp.zeros((4,)), ("embed",))} for k in g}
  cfg = _optim("adamw")
  cfg.eps, cfg.grad_clip = 1e3, 1.0
  tx, _ = optim_lib.make_optimizer(cfg, 10, params, players=players)
  plain = nn.unbox(params)
  updates, _ = jax.jit(tx.update)(g, state_lib.unbox(tx.init(params)), plain)
  total = float(optax.global_norm(g))
  for k, n in (("vae", 0.1), ("disc", 100.0)):
    scale = (1.0 / max(n, 1.0)) if players else 1.0 / total
    gc = g[k]["w"] * scale
    np.testing.assert_allclose(updates[k]["w"], -1e-3 * gc / (jnp.abs(gc) + 1e3), rtol=1e-5)


def test_unknown_player_is_refused():
  params = {"vae": {"w": jnp.zeros((2, 2))}}
  with pytest.raises(ValueError, match="players"):
    optim_lib.make_optimizer(_optim("adamw"), 10, params, players=("vae", "disc"))


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_frozen_subtrees_never_move_and_do_not_shrink_the_others_clip(name):
  params = {"enc": _boxed_params(), "dec": _boxed_params()}
  cfg = _optim(name)
  cfg.weight_decay, cfg.grad_clip = 0.1, 1.0
  tx, _ = optim_lib.make_optimizer(cfg, 10, params, frozen=(("enc",),))
  free, _ = optim_lib.make_optimizer(cfg, 10, {"dec": params["dec"]})
  rng = np.random.default_rng(4)
  grads = jax.tree.map(lambda x: x * 0 + 100 * rng.standard_normal(x.shape).astype(x.dtype),
                       params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(nn.unbox(updates["enc"])))
  # The frozen gradients (large here) take no part in the global-norm clip.
  alone, _ = jax.jit(free.update)({"dec": grads["dec"]}, free.init({"dec": params["dec"]}),
                                  {"dec": params["dec"]})
  for a, b in zip(jax.tree.leaves(nn.unbox(updates["dec"])), jax.tree.leaves(nn.unbox(alone))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="enc/nope"):
    optim_lib.make_optimizer(cfg, 10, params, frozen=(("enc", "nope"),))

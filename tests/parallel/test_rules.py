"""Logical rules → shardings: eval_shape → state_shardings → jit(init) on 8 fake devices."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.common import mesh_config
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib

_PARAM_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "layers", "conv_in", "conv_out", "norm",
                "patch", "classes"}
_ACT_NAMES = {"act_batch", "act_seq", "act_embed", "act_heads", "act_kv", "act_mlp", "act_frames",
              "act_height", "act_width", "act_channels"}


class Tiny(nn.Module):
  """Patch-embed → attention-shaped qkv → MLP → 3-channel head (3 is not divisible by 2)."""

  @nn.compact
  def __call__(self, x):
    lp = nn.with_logical_partitioning
    x = nn.Dense(16, kernel_init=lp(nn.initializers.lecun_normal(), ("patch", "embed")),
                 bias_init=lp(nn.initializers.zeros, ("embed",)))(x)
    x = nn.with_logical_constraint(x, ("act_batch", "act_seq", "act_embed"))
    qkv = self.param("qkv", lp(nn.initializers.lecun_normal(), ("embed", "heads", "kv")),
                     (16, 4, 8))
    h = jnp.einsum("bse,ehd->bshd", x, qkv).reshape(x.shape[:2] + (32,))
    h = nn.Dense(32, kernel_init=lp(nn.initializers.lecun_normal(), ("mlp", "embed")))(h)
    scale = self.param("scale", lp(nn.initializers.ones, ("norm",)), (32,))
    return nn.Dense(3, kernel_init=lp(nn.initializers.lecun_normal(), ("mlp", "embed")))(
        h * scale)

# Dense_2's 3 output features: fsdp=2 does not divide them, so that dim is replicated (and said so).
_GOLDEN = """\
Dense_0/bias        16  float32  P('fsdp')  ('embed',)
Dense_0/kernel   12x16  float32  P(None, 'fsdp')  ('patch', 'embed')
Dense_1/bias        32  float32  P()
Dense_1/kernel   32x32  float32  P('tensor', 'fsdp')  ('mlp', 'embed')
Dense_2/bias         3  float32  P()
Dense_2/kernel    32x3  float32  P('tensor')  ('mlp', 'embed')  [dim 1 (embed=3) not divisible by fsdp=2: replicated over fsdp]
qkv             16x4x8  float32  P('fsdp', 'tensor')  ('embed', 'heads', 'kv')
scale               32  float32  P()  ('norm',)"""


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh(mesh_config(data=2, fsdp=2, tensor=2, context=1))


@pytest.fixture(scope="module")
def sharded_state(mesh):
  model, tx = Tiny(), optax.adamw(1e-3, weight_decay=0.1)
  batch = jnp.zeros((4, 8, 12))

  def init_fn(rng, batch):
    params = model.init(rng, batch)["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  rng = jax.random.key(0)
  abstract = jax.eval_shape(init_fn, rng, batch)
  shardings = rules_lib.state_shardings(abstract, mesh, rules_lib.DIT_RULES)
  with jax.set_mesh(mesh):
    state = jax.jit(init_fn, out_shardings=shardings)(rng, batch)
  return abstract, shardings, state


def test_tables_cover_exactly_the_contributing_names():
  for name in ("dit", "vae", "text"):
    names = [n for n, _ in rules_lib.rules_for(name)]
    assert len(names) == len(set(names)), name
    assert set(names) == _PARAM_NAMES | _ACT_NAMES, name
    for _, ax in rules_lib.rules_for(name):
      for a in rules_lib._as_tuple(ax):
        assert a in mesh_lib.AXES
  with pytest.raises(ValueError, match="no sharding rules for model 'unet'"):
    rules_lib.rules_for("unet")


def test_dit_rules_table():
  r = dict(rules_lib.DIT_RULES)
  assert r["act_batch"] == ("data", "fsdp") and r["act_seq"] == "context"
  assert r["embed"] == "fsdp" and r["mlp"] == r["heads"] == "tensor"
  assert dict(rules_lib.TEXT_RULES)["act_seq"] is None


def test_params_land_with_intended_shardings(sharded_state, mesh):
  _, _, state = sharded_state
  p = nn.meta.unbox(state.params)
  want = {
      ("Dense_0", "kernel"): P(None, "fsdp"),
      ("Dense_0", "bias"): P("fsdp"),
      ("qkv",): P("fsdp", "tensor"),
      ("Dense_1", "kernel"): P("tensor", "fsdp"),
      ("scale",): P(),
      # 3 output features: fsdp=2 does not divide 3 → replicated on that dim
      ("Dense_2", "kernel"): P("tensor"),
  }
  for path, spec in want.items():
    leaf = p
    for k in path:
      leaf = leaf[k]
    assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim), (path,
                                                                                  leaf.sharding)
  # a sharded kernel really is split: each of the 8 devices holds a quarter of qkv
  assert p["qkv"].addressable_shards[0].data.shape == (8, 2, 8)


def test_optimizer_moments_mirror_params(sharded_state, mesh):
  _, _, state = sharded_state
  params = nn.meta.unbox(state.params)
  adam = state.opt_state[0]
  for moment in (adam.mu, adam.nu):
    moment = nn.meta.unbox(moment)
    jax.tree.map(lambda m, p: (m.sharding.is_equivalent_to(p.sharding, p.ndim)
                               or pytest.fail(f"{m.sharding} != {p.sharding}")), moment, params)
  assert adam.count.sharding.is_fully_replicated
  assert state.step.sharding.is_fully_replicated


def test_unboxed_optimizer_state_mirrors_by_path(mesh):
  """An optax state built from UNBOXED params (no metadata) still follows the params."""
  model, tx = Tiny(), optax.adam(1e-3)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((4, 8, 12)))["params"]
  opt = jax.eval_shape(tx.init, nn.meta.unbox(boxed))
  state = {"params": boxed, "opt_state": opt, "rng": jax.random.key(1)}
  sh = rules_lib.state_shardings(state, mesh, rules_lib.DIT_RULES)
  assert sh["opt_state"][0].mu["qkv"].spec == P("fsdp", "tensor")
  assert sh["opt_state"][0].nu["Dense_1"]["kernel"].spec == P("tensor", "fsdp")
  assert sh["opt_state"][0].count.spec == P()
  assert sh["rng"].spec == P()


def test_unboxed_state_warns_and_replicates(mesh, caplog):
  params = nn.meta.unbox(jax.eval_shape(Tiny().init, jax.random.key(0), jnp.zeros((4, 8, 12))))
  sh = rules_lib.state_shardings(params, mesh, rules_lib.DIT_RULES)
  assert all(s.spec == P() for s in jax.tree.leaves(sh))
  assert "no nn.Partitioned" in caplog.text


def test_describe_golden(sharded_state, mesh):
  abstract, shardings, _ = sharded_state
  text = rules_lib.describe_shardings(abstract.params, shardings.params, rules_lib.DIT_RULES)
  assert text == _GOLDEN, "\n" + text


def test_tuple_axes_drop_trailing_until_divisible(mesh):
  spec, notes = rules_lib.mesh_spec(("act_batch", "act_seq"), (2, 8), mesh, rules_lib.DIT_RULES)
  assert spec == P("data", "context")
  assert notes and "fsdp" in notes[0]
  spec, notes = rules_lib.mesh_spec(("act_batch", None), (4, 8), mesh, rules_lib.DIT_RULES)
  assert spec == P(("data", "fsdp")) and not notes


def test_unknown_logical_name_raises(mesh):
  with pytest.raises(ValueError, match="logical axis name 'emb' has no sharding rule"):
    rules_lib.mesh_spec(("emb", "mlp"), (4, 4), mesh, rules_lib.DIT_RULES, "Dense_0/kernel")


def test_batch_sharding_and_replicated(mesh):
  assert rules_lib.batch_sharding(mesh).spec == P(("data", "fsdp"))
  assert rules_lib.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)
  x = jax.device_put(jnp.zeros((8, 5)), rules_lib.batch_sharding(mesh, 2))
  assert x.addressable_shards[0].data.shape == (2, 5)
  assert rules_lib.replicated(mesh).is_fully_replicated

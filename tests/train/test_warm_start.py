"""train.init_from: a run starts from another run's EMA weights, fresh everywhere else."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from sora_jax import runs
from sora_jax.config import ConfigError
from sora_jax.train import state as state_lib
from sora_jax.train import warm_start

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_VAE = os.path.join(REPO, "sora_jax", "assets", "demo", "vae")


def _vae_config(**over):
  c = demo.get_config("stage=vae,world=large")
  with c.unlocked():
    c.vae.shortcut_layout = "subpixel"   # the shipped VAE's layout
    c.train.init_from = SHIPPED_VAE
    for k, v in over.items():
      section, key = k.split(".")
      c[section][key] = v
  return c


def test_check_refuses_what_cannot_give_its_weights(tmp_path):
  warm_start.check(_vae_config())          # the same architecture; a critic may be added
  warm_start.check(_vae_config(**{"vae.adv_weight": 0.1}))
  with pytest.raises(ConfigError, match=r"vae.shortcut_layout: subpixel → channel"):
    warm_start.check(_vae_config(**{"vae.shortcut_layout": "channel"}))
  with pytest.raises(ConfigError, match="is not a directory"):
    warm_start.check(_vae_config(**{"train.init_from": str(tmp_path / "missing")}))
  t2v = demo.get_config("stage=t2v")
  with t2v.unlocked():
    t2v.train.init_from = SHIPPED_VAE
  with pytest.raises(ConfigError, match="is a vae run; this run trains t2v"):
    warm_start.check(t2v)


def _state(config, resize=None):
  abstract = runs.abstract_vae_params(runs.VAESystem(config))
  fresh = {"vae": jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract),
           "disc": {"w": jnp.full((3,), 7.0)}}
  if resize:
    leaf = jax.tree.leaves(fresh["vae"])[0]
    fresh["vae"] = jax.tree.map(lambda a: jnp.zeros((1,) + a.shape) if a is leaf else a,
                                fresh["vae"])
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=fresh, opt_state=(),
                               ema_params=jax.tree.map(jnp.copy, fresh))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = state_lib.TrainState(step=sharding, params=jax.tree.map(lambda _: sharding, fresh),
                                   opt_state=(),
                                   ema_params=jax.tree.map(lambda _: sharding, fresh))
  return state, shardings


def test_apply_refuses_params_of_another_shape():
  config = _vae_config(**{"vae.adv_weight": 0.1})
  with pytest.raises(ConfigError, match="'vae' params differ in shape"):
    state, shardings = _state(config, resize=True)
    warm_start.apply(state, config, shardings)


def test_apply_loads_the_model_and_its_ema_and_leaves_the_critic_fresh():
  config = _vae_config(**{"vae.adv_weight": 0.1})
  state, shardings = _state(config)
  out = warm_start.apply(state, config, shardings)
  want = runs.open_vae(SHIPPED_VAE)[1]
  for got in (out.params["vae"], out.ema_params["vae"]):
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b),
                                          got, want))
    assert leaves and all(leaves)
  np.testing.assert_array_equal(out.params["disc"]["w"], 7.0)
  assert int(out.step) == 0


SHIPPED_T2V = os.path.join(REPO, "sora_jax", "assets", "demo", "t2v")


def _without_layout(out_dir: str) -> str:
  """The shipped DiT with its layout readout and prior taken out: a run trained without them."""
  config = runs.load_config(SHIPPED_T2V)
  with config.unlocked():
    config.model.layout_readout = config.model.layout_prior = False
    config.sample.layout_prior_strength = 0.0
  params = dict(runs.open_t2v(SHIPPED_T2V)[1])
  params["dit"] = {k: v for k, v in dict(params["dit"]).items() if not k.startswith("layout_")}
  runs.save_config(config, out_dir)
  runs.write_export_params(out_dir, jax.tree.map(np.asarray, params))
  return out_dir


def test_an_additive_option_loads_the_source_and_keeps_its_new_modules_fresh(tmp_path):
  """model.layout_readout and layout_prior switched on over a run without them: every source
  weight is loaded, their modules keep their init; switching one off adds nothing."""
  source = _without_layout(str(tmp_path / "source"))
  config = runs.load_config(source)
  with config.unlocked():
    config.train.init_from = source
    config.model.layout_readout = True
    config.model.layout_prior = True
  warm_start.check(config)
  system = runs.t2v_system(config)
  abstract = runs.abstract_t2v_params(system)
  fresh = jax.tree.map(lambda a: jnp.full(a.shape, 3.0, a.dtype), dict(abstract))
  new = ("layout_query", "layout_readout", "layout_prior")
  assert set(new) <= set(fresh["dit"])
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shard = lambda t: jax.tree.map(lambda _: sharding, t)   # noqa: E731
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=fresh, opt_state=(),
                               ema_params=jax.tree.map(jnp.copy, fresh))
  shardings = state_lib.TrainState(step=sharding, params=shard(fresh), opt_state=(),
                                   ema_params=shard(fresh))
  out = warm_start.apply(state, config, shardings)
  want = dict(runs.open_t2v(source)[1])
  for got in (out.params, out.ema_params):
    for key, tree in want.items():
      for name, sub in tree.items():
        same = jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b),
                                            dict(got[key])[name], sub))
        assert same and all(same), (key, name)
    for name in new:
      assert all(np.all(np.asarray(x) == 3.0) for x in jax.tree.leaves(got["dit"][name]))

  src_on = runs.load_config(source)   # the reverse: a source with the readout, run without
  with src_on.unlocked():
    src_on.model.layout_readout = True
  off = runs.load_config(source)
  assert warm_start._added(src_on, off) == {}
  assert "model.layout_readout" in warm_start._added(off, src_on)


def test_a_fine_tune_keeps_the_latent_scale_its_weights_were_trained_at(tmp_path):
  from sora_jax.train import setup
  shipped_t2v = os.path.join(REPO, "sora_jax", "assets", "demo", "t2v")
  c = demo.get_config("stage=t2v")
  with c.unlocked():
    c.vae_workdir, c.train.init_from = SHIPPED_VAE, shipped_t2v
  assert c.diffusion.latent_scale == 0   # would be estimated from this run's own data
  _, resolved = setup.resolve(c, str(tmp_path / "run"))
  expected = runs.load_config(shipped_t2v).diffusion.latent_scale
  assert expected > 0 and resolved["latent_scale"] == pytest.approx(expected)

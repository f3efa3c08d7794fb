"""model.layout_prior in training: its loss is weight x the MSE of the caption's predicted clean
clip, added to the flow loss at every t; it trains the readout and its head; held-out
(fixed-t) evaluation reports the flow loss alone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2v as t2v_config
from sora_jax import config as config_lib
from sora_jax import runs


def _system(weight):
  config = t2v_config.get_config("runlocal,res=32,frames=9").unlock()
  config.diffusion.latent_scale = 0.9
  config.model.layout_readout = True
  config.model.layout_prior = True
  config.diffusion.layout_prior_weight = weight
  config.text.drop_prob = 0.0
  return runs.t2v_system(config)


def test_layout_prior_loss_is_added_and_trains_the_head():
  on, off = _system(2.0), _system(0.0)
  r = np.random.RandomState(0)
  batch = {k: (r.randn(*s.shape).astype(np.float32) if s.dtype == jnp.float32 else
               (r.rand(*s.shape) < 0.7) if s.dtype == jnp.bool_ else
               r.randint(1, 100, s.shape).astype(np.int32))
           for k, s in on.example_batch(2).items()}
  params = runs.unbox(jax.jit(on.init)(jax.random.key(0), batch))
  rng = jax.random.key(1)

  def both(prm):
    (l_on, m_on), grads = jax.value_and_grad(on.loss, has_aux=True)(prm, batch, rng)
    l_off, m_off = off.loss(prm, batch, rng)
    _, m_eval = on.loss(prm, batch, rng, t=jnp.full((2,), 0.5))
    prior = on.layout_prior(prm, batch["tokens"], batch["text_mask"])
    return l_on, m_on, grads, l_off, m_off, m_eval, prior

  l_on, m_on, grads, l_off, m_off, m_eval, prior = jax.jit(both)(params)
  aux = float(m_on["layout_prior_loss"])
  assert aux > 0.1
  np.testing.assert_allclose(float(l_on) - float(l_off), 2.0 * aux, rtol=1e-4)
  # the readout's output starts at zero, so its first gradient comes through the head (whose
  # kernel follows once the readout says something)
  assert float(jnp.abs(grads["dit"]["layout_prior"]["bias"]).max()) > 0
  assert float(jnp.abs(grads["dit"]["layout_readout"]["out"]["kernel"]).max()) > 0
  assert "layout_prior_loss" not in m_eval
  assert prior.shape == batch["latents"].shape
  # no caption is dropped here (text.drop_prob=0): the term is exactly the prior's MSE
  np.testing.assert_allclose(aux, float(jnp.mean(jnp.square(prior - batch["latents"]))),
                             rtol=1e-5)


def test_sampling_from_the_prior_is_an_edit_of_the_prior():
  """sample.layout_prior_strength=s starts from the caption's prior noised to t=s: the same
  as editing the prior at strength s, and not the same as starting from pure noise."""
  system = _system(1.0)
  batch = {k: np.ones(s.shape, s.dtype) for k, s in system.example_batch(2).items()}
  params = runs.unbox(jax.jit(system.init)(jax.random.key(0), batch))
  # a nonzero readout, so the prior says something caption-dependent
  params = jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape)),
                        params)
  tokens, mask = batch["tokens"], batch["text_mask"]
  rng, kw = jax.random.key(3), dict(num_steps=4, guidance_scale=2.0)
  plain = system.sample_latents(params, tokens, mask, rng, **kw)
  prior = system.layout_prior(params, tokens, mask)
  edited = system.sample_latents(params, tokens, mask, rng, init=prior, strength=0.8, **kw)
  system.config.sample.layout_prior_strength = 0.8
  started = system.sample_latents(params, tokens, mask, rng, **kw)
  np.testing.assert_allclose(np.asarray(started), np.asarray(edited), atol=1e-5)
  assert float(jnp.abs(started - plain).max()) > 1e-3


def test_a_run_s_sampling_settings_are_overridden_and_checked(tmp_path):
  system = _system(1.0)
  runs.save_config(system.config, str(tmp_path))
  config = runs.load_config(str(tmp_path))
  runs.override_sample(config, {"layout_prior_strength": 0.9, "steps": None})
  assert config.sample.layout_prior_strength == 0.9
  with pytest.raises(config_lib.ConfigError, match="layout_prior_strength"):
    runs.override_sample(config, {"layout_prior_strength": 2.0})
  with pytest.raises(config_lib.ConfigError, match="no key 'strenght'"):
    runs.override_sample(config, {"strenght": 0.5})
  config.model.layout_prior = False
  with pytest.raises(config_lib.ConfigError, match="model.layout_prior=True"):
    runs.override_sample(config, {"layout_prior_strength": 0.9})

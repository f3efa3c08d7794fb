"""model.layout_prior in training: its loss is weight x the MSE of the caption's predicted clean
clip, added to the flow loss at every t; it trains the readout and its head; held-out
(fixed-t) evaluation reports the flow loss alone."""
import jax
import jax.numpy as jnp
import numpy as np

from configs import t2v as t2v_config
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

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


def _perturbed(system):
  """Params with every weight nonzero (so the readout, hence the prior, says something
  caption-dependent), and a batch of two prompts' tokens and mask."""
  batch = {k: np.ones(s.shape, s.dtype) for k, s in system.example_batch(2).items()}
  params = runs.unbox(jax.jit(system.init)(jax.random.key(0), batch))
  params = jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape)),
                        params)
  return params, batch["tokens"], batch["text_mask"]


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
  params, tokens, mask = _perturbed(system)
  rng, kw = jax.random.key(3), dict(num_steps=4, guidance_scale=2.0)
  plain = system.sample_latents(params, tokens, mask, rng, **kw)
  prior = system.layout_prior(params, tokens, mask)
  edited = system.sample_latents(params, tokens, mask, rng, init=prior, strength=0.8, **kw)
  system.config.sample.layout_prior_strength = 0.8
  started = system.sample_latents(params, tokens, mask, rng, **kw)
  np.testing.assert_allclose(np.asarray(started), np.asarray(edited), atol=1e-5)
  assert float(jnp.abs(started - plain).max()) > 1e-3
  # known frames say where the object is: the prior does not start those samples
  from sora_jax.diffusion import conditioning
  shape = started.shape
  known = conditioning.FrameCondition(jnp.ones(shape), jnp.broadcast_to(jnp.arange(shape[1]) == 0, shape[:2]))
  with_frames = system.sample_latents(params, tokens, mask, rng, frames=known, **kw)
  system.config.sample.layout_prior_strength = 0.0
  np.testing.assert_allclose(
      np.asarray(with_frames),
      np.asarray(system.sample_latents(params, tokens, mask, rng, frames=known, **kw)), atol=1e-6)


def test_a_negative_prompt_takes_the_null_caption_s_place_in_guidance():
  """CFG steers from `negative` instead of the null caption: the null caption as the negative
  is the default, and the prompt itself as its own negative leaves the conditional alone."""
  from sora_jax.models import text_encoder as text_lib
  system = _system(1.0)
  params, tokens, mask = _perturbed(system)
  run = lambda **kw: np.asarray(system.sample_latents(  # noqa: E731
      params, tokens, mask, jax.random.key(3), num_steps=3, **kw))
  guided = run(guidance_scale=4.0)
  null = text_lib.null_text(2, tokens.shape[1])
  np.testing.assert_allclose(run(guidance_scale=4.0, negative=null), guided, atol=1e-6)
  np.testing.assert_allclose(run(guidance_scale=4.0, negative=(tokens, mask)),
                             run(guidance_scale=1.0), atol=1e-5)
  assert np.abs(run(guidance_scale=1.0) - guided).max() > 1e-3


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
  from sora_jax.config import parse_interval
  runs.override_sample(config, {"guidance_interval": parse_interval("0.3,1")})
  assert tuple(config.sample.guidance_interval) == (0.3, 1.0)
  with pytest.raises(config_lib.ConfigError, match=r"guidance_interval=.1.0, 0.3. needs 0 <= lo"):
    runs.override_sample(config, {"guidance_interval": parse_interval("1,0.3")})
  with pytest.raises(config_lib.ConfigError, match="must be LO,HI"):
    parse_interval("0.3")
  config.model.layout_prior = False
  with pytest.raises(config_lib.ConfigError, match="model.layout_prior=True"):
    runs.override_sample(config, {"layout_prior_strength": 0.9})


def _prior_only(system):
  config = system.config.unlock()
  config.diffusion.layout_prior_only = True
  return runs.t2v_system(config)


def _random_batch(system, b):
  r = np.random.RandomState(0)
  return {k: (r.randn(*s.shape).astype(np.float32) if s.dtype == jnp.float32 else
              (r.rand(*s.shape) < 0.7) if s.dtype == jnp.bool_ else
              r.randint(1, 100, s.shape).astype(np.int32))
          for k, s in system.example_batch(b).items()}


def test_prior_only_trains_the_prior_alone():
  """diffusion.layout_prior_only: the loss is the prior's MSE (what the joint loss adds), and
  only the text encoder, the DiT's text projection, the readout and its head get a gradient."""
  joint = _system(1.0)
  alone = _prior_only(joint)
  batch = _random_batch(joint, 2)
  params = runs.unbox(jax.jit(joint.init)(jax.random.key(0), batch))
  # as after a few steps: the readout's zero-initialised output has learnt something, so the
  # gradient reaches the position queries and the text encoder through it
  out = params["dit"]["layout_readout"]["out"]
  out["kernel"] = 0.05 * jnp.cos(jnp.arange(out["kernel"].size)).reshape(out["kernel"].shape)
  rng = jax.random.key(1)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(alone.loss, has_aux=True))(
      params, batch, rng)
  _, m_joint = jax.jit(joint.loss)(params, batch, rng)
  np.testing.assert_allclose(float(loss), float(m_joint["layout_prior_loss"]), rtol=1e-5)
  assert float(metrics["layout_prior_loss"]) == float(loss)
  moved = {k for k, g in grads["dit"].items()
           if any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g))}
  # the readout, its head and the caption's path into it; not the blocks, embedders or head
  assert moved == {"text_proj1", "text_proj2", "layout_query", "layout_readout", "layout_prior"}
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(grads["text"]))
  # held-out evaluation (fixed t) still reports the flow loss of the whole model
  _, m_eval = alone.loss(params, batch, rng, t=jnp.full((2,), 0.5))
  assert "loss_per_example" in m_eval and "layout_prior_loss" not in m_eval


def test_prior_only_on_packed_rows_is_the_packed_prior_term():
  from sora_jax.data import packing
  from sora_jax.models import patching
  joint = _system(1.0)
  config = joint.config.unlock()
  config.data.sizes, config.data.pack_tokens = "9x32x32,1x32x32", 32
  joint = runs.t2v_system(config)
  alone = _prior_only(joint)
  r = np.random.RandomState(0)
  sizes = packing.parse_sizes(config.data.sizes)
  tokens, mask = joint.encode_prompts(["a red circle moves left", "a blue star"])
  clips = [{"latents": r.randn(*joint.vae.latent_shape(*s.shape)).astype(np.float32),
            "tokens": tokens[i % 2], "text_mask": mask[i % 2]} for i, s in enumerate(sizes * 3)]
  batch = next(iter(packing.make_packed_dataset(
      clips, patchify=lambda lat: patching.patchify_clip(lat, config.model.patch),
      token_budget=32, slots=2, text_len=config.text.max_len, rows_per_batch=2, seed=0,
      process_index=0, process_count=1)))
  params = runs.unbox(jax.jit(joint.init)(jax.random.key(0), _random_batch(joint, 1)))
  rng = jax.random.key(1)
  loss, _ = jax.jit(alone.packed_loss)(params, batch, rng)
  _, m_joint = jax.jit(joint.packed_loss)(params, batch, rng)
  np.testing.assert_allclose(float(loss), float(m_joint["layout_prior_loss"]), rtol=1e-5)

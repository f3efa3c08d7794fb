"""VAE losses: training reduces the loss, the GAN gates and routes gradients, perceptual loads
local weights, PSNR/SSIM behave."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from sora_jax.eval.recon import psnr, ssim
from sora_jax.models import perceptual
from sora_jax.models.discriminator import hinge_g_loss
from sora_jax.train.vae_training import VAETraining


def _config(**vae_over):
  vae = dict(temporal_compression=4, spatial_compression=8, latent_channels=4, channels=8,
             channel_mult=(1, 1, 1, 1), num_res_blocks=0, dtype="float32",
             param_dtype="float32", recon_loss="l1", kl_weight=1e-4, adv_weight=0.0,
             adv_start_step=3, adv_adaptive=False, disc_channels=8, disc_layers=2, perceptual_weight=0.0,
             perceptual_path="", scaling_factor=1.0, encode_chunk=1, tile=0, tile_overlap=0)
  vae.update(vae_over)
  return mlc.ConfigDict(dict(vae=vae, data=dict(frames=5, height=16, width=16)))


def _batch():
  t = jnp.linspace(0, 1, 5)[:, None, None, None]
  yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, 16), jnp.linspace(-1, 1, 16), indexing="ij")
  frames = jnp.stack([jnp.sin(3 * xx + 2 * t[..., 0]), jnp.cos(2 * yy - t[..., 0]),
                      xx * yy * jnp.ones_like(t[..., 0])], -1)
  return {"video": jnp.stack([frames, -frames]).astype(jnp.float32)}


def _tiny_weights(rng):
  k = lambda cin, cout: rng.normal(0, 0.5, (3, 3, cin, cout)).astype(np.float32)  # noqa: E731
  return {"stage0.conv0.kernel": k(3, 4), "stage0.conv0.bias": np.zeros(4, np.float32),
          "stage1.conv0.kernel": k(4, 6), "stage1.conv0.bias": np.full(6, 0.1, np.float32),
          "stage1.conv1.kernel": k(6, 6), "stage1.conv1.bias": np.zeros(6, np.float32),
          "lin1": np.abs(rng.normal(size=6)).astype(np.float32)}


START = 1000  # adv_start_step of the shared task: training below it is plain recon + KL (+ LPIPS)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """One task with critic and perceptual loss, one compiled step for every task test."""
  path = str(tmp_path_factory.mktemp("perceptual") / "p.npz")
  perceptual.save_perceptual(path, _tiny_weights(np.random.default_rng(1)))
  task = VAETraining(_config(adv_weight=0.5, adv_start_step=START, perceptual_weight=0.5,
                         perceptual_path=path))
  batch = _batch()
  params = nn.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, i):
    rng = jax.random.fold_in(jax.random.key(1), i)
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng, i)
    critic = jax.grad(lambda p: task.loss(p, batch, rng, i)[1]["d_loss"])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, metrics, grads, critic

  return dict(task=task, batch=batch, params=params, tx=tx, step=step)


def test_loss_decreases_on_a_fixed_batch(shared):
  task, batch, params, step = shared["task"], shared["batch"], shared["params"], shared["step"]
  assert set(params) == {"vae", "disc"}
  opt_state, losses = shared["tx"].init(params), []
  for i in range(20):
    params, opt_state, loss, metrics, _, _ = step(params, opt_state, i)
    losses.append(float(loss))
  assert {"recon", "kl", "psnr", "perceptual", "g_adv", "d_loss"} <= set(metrics)
  # Before adv_start_step the loss is exactly recon + kl_weight * KL + perceptual_weight * LPIPS.
  assert losses[-1] == pytest.approx(float(metrics["recon"] + 1e-4 * metrics["kl"]
                                           + 0.5 * metrics["perceptual"]), rel=1e-5)
  assert float(metrics["perceptual"]) > 0
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
  vis = task.visualize(params, batch, jax.random.key(2))["recon"]
  assert vis.dtype == np.uint8 and vis.shape == (5, 16, 32, 3)
  ev, videos = task.evaluate(params, batch)
  assert ev["psnr"] > 5 and -1 <= ev["ssim"] <= 1 and not videos


def test_gan_gradients_gate_and_route(shared):
  """Before adv_start_step the critic gets exactly zero gradient; after it, the critic's gradient
  is d_loss's alone (stop_gradient on x_hat) and d_loss never moves the VAE."""
  params, opt_state = shared["params"], shared["tx"].init(shared["params"])
  norm = lambda t: float(optax.global_norm(t))  # noqa: E731
  *_, m_before, before, _ = shared["step"](params, opt_state, START - 1)
  assert norm(before["disc"]) == 0.0 and norm(before["vae"]) > 0
  assert float(m_before["d_loss"]) == 0.0
  *_, m_after, after, critic = shared["step"](params, opt_state, START)
  assert float(m_after["d_loss"]) > 0
  assert norm(after["disc"]) > 0 and norm(after["vae"]) > 0
  assert norm(after["vae"]) != pytest.approx(norm(before["vae"]))  # g_adv now reaches the VAE
  assert norm(critic["vae"]) == 0.0
  for a, b in zip(jax.tree.leaves(after["disc"]), jax.tree.leaves(critic["disc"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("adaptive", [False, True])
def test_adversarial_push_at_the_decoder_output(shared, adaptive):
  """The generator term's gradient at x_hat is the critic's, times adv_weight - or, adaptive,
  scaled to adv_weight times the reconstruction gradient's norm (VQGAN's balance)."""
  task = VAETraining(_config(adv_weight=0.5, adv_start_step=0, adv_adaptive=adaptive,
                             disc_channels=8, disc_layers=2))
  x = shared["batch"]["video"]
  x_hat = x + 0.3 * jax.random.normal(jax.random.key(3), x.shape)
  disc = shared["params"]["disc"]
  g_term = lambda v: task._adversarial(disc, x, v, 0)[0]  # noqa: E731
  grad = jax.grad(g_term)(x_hat)
  critic = jax.grad(lambda v: hinge_g_loss(task.disc.apply({"params": disc}, v)))(x_hat)
  rec = jax.grad(lambda v: task.system.recon_loss(x, v))(x_hat)
  want = 0.5 * (np.linalg.norm(rec) if adaptive else np.linalg.norm(critic))
  assert np.linalg.norm(grad) == pytest.approx(want, rel=1e-4)
  cos = float(jnp.vdot(grad, critic) / (jnp.linalg.norm(grad) * jnp.linalg.norm(critic)))
  assert cos == pytest.approx(1.0, abs=1e-5)              # the critic's direction either way


@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_perceptual_loads_local_weights(tmp_path, ext):
  path = str(tmp_path / f"tiny.{ext}")
  perceptual.save_perceptual(path, _tiny_weights(np.random.default_rng(0)))
  net = perceptual.load_perceptual(path)
  assert [len(s) for s in net.stages] == [2 - 1, 2] and net.lins[0] is None
  a = _batch()["video"]
  b = a + 0.2 * jax.random.normal(jax.random.key(0), a.shape)
  assert float(perceptual.perceptual_distance(net, a, a)) == pytest.approx(0.0, abs=1e-6)
  d_small = float(perceptual.perceptual_distance(net, a, 0.5 * a + 0.5 * b))
  d_big = float(perceptual.perceptual_distance(net, a, b))
  assert 0 < d_small < d_big


def test_perceptual_missing_file_names_the_key(tmp_path):
  with pytest.raises(FileNotFoundError, match="vae.perceptual_path"):
    VAETraining(_config(perceptual_weight=1.0, perceptual_path=str(tmp_path / "none.npz")))


def test_psnr_and_ssim():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (2, 3, 24, 24, 3), dtype=np.uint8)
  noise = rng.integers(-40, 41, a.shape)
  noisy = np.clip(a.astype(np.int32) + noise, 0, 255).astype(np.uint8)
  noisier = np.clip(a.astype(np.int32) + 3 * noise, 0, 255).astype(np.uint8)
  assert float(psnr(a, a)) == 100.0 and float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
  mse = np.mean(((a.astype(np.float64) - noisy) / 255.0) ** 2, axis=(-3, -2, -1))
  np.testing.assert_allclose(float(psnr(a, noisy)), np.mean(-10 * np.log10(mse)), rtol=1e-4)
  af = a.astype(np.float32) / 127.5 - 1.0
  nf = noisy.astype(np.float32) / 127.5 - 1.0
  assert float(psnr(af, nf)) == pytest.approx(float(psnr(a, noisy)), rel=1e-4)
  assert float(ssim(af, nf)) == pytest.approx(float(ssim(a, noisy)), abs=1e-4)
  assert 0 < float(ssim(a, noisier)) < float(ssim(a, noisy)) < 0.999


@pytest.mark.parametrize("strides", [(2, 2), (1, 1)])
def test_critic_conv_equals_flax_3d_conv(strides):
  """The critic's time-stacked 2D conv is nn.Conv's 3D 'SAME' conv, params and values."""
  from sora_jax.models.discriminator import TimeStackedConv
  x = jax.random.normal(jax.random.key(0), (2, 5, 16, 16, 3))
  conv = TimeStackedConv(4, (3, 4, 4), strides)
  params = conv.init(jax.random.key(1), x)
  ref = nn.Conv(4, (3, 4, 4), (1,) + strides, padding="SAME").apply(params, x)
  np.testing.assert_allclose(conv.apply(params, x), ref, atol=1e-5)


def test_freeze_encoder_trains_the_decoder_alone():
  """vae.freeze_encoder: no gradient reaches the encoder, so its latents stay those a DiT learnt;
  the decoder still gets the reconstruction's gradient. Refused without init_from."""
  from sora_jax import config as config_lib
  task = VAETraining(_config(freeze_encoder=True))
  assert task.frozen == (("vae", "encoder"),)
  batch = _batch()
  params = nn.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  grads = jax.jit(jax.grad(lambda p: task.loss(p, batch, jax.random.key(1), 0)[0]))(params)
  assert float(optax.global_norm(grads["vae"]["encoder"])) == 0.0
  assert float(optax.global_norm(grads["vae"]["decoder"])) > 0
  bad = mlc.ConfigDict(dict(task="vae", vae=dict(freeze_encoder=True), train=dict(init_from="")))
  with pytest.raises(config_lib.ConfigError, match="freeze_encoder.*init_from"):
    config_lib.check_frozen_encoder(bad)

"""Spacetime-patch VAE on the procedural world.

  sora-jax train --config=configs/vae.py:res=64,frames=17,comp=4x8x8,zch=16 --workdir=W

Arguments (the ablation axes): res (H or HxW), frames (1 + tc*k), comp (TxSxS compression:
1x8x8 image VAE, 4x8x8, 4x16x16), zch (latent channels), ch (base width), patch (pixel-unshuffle
stem 1/2/4), shortcut (DC-AE non-parametric down/up shortcuts), opt (adamw | muon), steps,
batch, lr, loss (reconstruction: l1 | l2), kl (KL weight), adv (adversarial weight, 0 = off),
runlocal (tiny, for CPU tests). Every key and its default: sora_jax/config_sections.py.
"""
import ml_collections as mlc

from configs import common
from configs.common import channel_mult_for, vae_section  # noqa: F401  (re-exported)


def parse_comp(text: str) -> tuple[int, int]:
  """'4x8x8' -> (temporal, spatial) compression."""
  tc, sc, sc2 = common.parse_triple(text, "comp")
  if sc != sc2:
    raise ValueError(f"config argument 'comp' needs equal spatial factors, got {text!r}")
  return tc, sc


def get_config(arg=None):
  a = common.parse_arg(arg, res="64", frames=17, comp="4x8x8", zch=16, ch=64, patch=1,
                       steps=20000, batch=8, lr=3e-4, loss="l1", kl=1e-5, adv=0.0, seed=0,
                       shortcut=True, opt="muon", runlocal=False)
  height, width = common.parse_res(a.res)
  tc, sc = parse_comp(a.comp)
  c = mlc.ConfigDict()
  c.task = "vae"
  c.seed = a.seed
  c.data = common.data_section(frames=a.frames, height=height, width=width, batch_size=a.batch)
  c.vae = common.vae_section(
      temporal_compression=tc, spatial_compression=sc, latent_channels=a.zch, channels=a.ch,
      patch_size=a.patch, shortcut=bool(a.shortcut), recon_loss=a.loss, kl_weight=a.kl,
      adv_weight=a.adv)
  c.optim = common.optim_section(name=a.opt, lr=a.lr, warmup_steps=min(500, a.steps // 10),
                                 ema_decay=0.999)
  c.train = common.train_section(steps=a.steps, log_every=50, ckpt_every=1000,
                                 sample_every=2000)
  c.mesh = common.mesh_section()
  c.rules = "vae"
  if a.runlocal:
    c.data.batch_size = min(a.batch, 4)
    c.vae.channels = 8
    c.vae.latent_channels = min(a.zch, 4)
    common.shrink_for_local(c)
  return c.lock()

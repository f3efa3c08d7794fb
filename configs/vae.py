"""Spacetime-patch VAE on the procedural world.

  sora-jax train --config=configs/vae.py:res=64,frames=17,comp=4x8x8,zch=16 --workdir=W

Arguments (the ablation axes): res (H or HxW), frames (1 + tc*k), comp (TxSxS compression:
1x8x8 image VAE, 4x8x8, 4x16x16), zch (latent channels), ch (base width), patch (pixel-unshuffle
stem 1/2/4), shortcut (DC-AE non-parametric down/up shortcuts), opt (adamw | muon), steps,
batch, lr, loss (reconstruction: l1 | l2), kl (KL weight), adv (adversarial weight, 0 = off),
runlocal (tiny, for CPU tests).
"""
from configs import common


def vae_section(comp=(4, 8, 8), zch=16, ch=64, channel_mult=(1, 2, 4, 4), patch=1,
                shortcut=True):
  import ml_collections as mlc
  tc, sc, sc2 = comp
  if sc != sc2:
    raise ValueError(f"config argument 'comp' needs equal spatial factors, got {comp}")
  return mlc.ConfigDict(dict(
      temporal_compression=tc, spatial_compression=sc, latent_channels=zch,
      # patch: pixel-unshuffle stem (LTX-Video style): the first conv already runs at H/p,
      # which is what makes 64x64 video affordable on a CPU. Spatial downsamples = log2(s/p).
      patch_size=patch, channels=ch, channel_mult=tuple(channel_mult), num_res_blocks=1,
      shortcut=shortcut,
      dtype="float32", param_dtype="float32",
      recon_loss="l1", kl_weight=1e-6,
      adv_weight=0.0, adv_start_step=2000, disc_channels=32, disc_layers=3,
      perceptual_weight=0.0, perceptual_path="",
      scaling_factor=1.0,
      encode_chunk=2, tile=0, tile_overlap=16,
  ))


def channel_mult_for(spatial_compression: int, base=(1, 2, 4, 4), patch: int = 1,
                     temporal_compression: int = 1):
  """One level per downsample (the larger of log2(s / patch) and log2(tc)) plus the input."""
  levels = max(int(spatial_compression // patch).bit_length(),
               int(temporal_compression).bit_length())
  return tuple(base) + (base[-1],) * (levels - len(base)) if levels > len(base) else tuple(base[:levels])


def get_config(arg=None):
  a = common.parse_arg(arg, res="64", frames=17, comp="4x8x8", zch=16, ch=64, patch=1,
                       steps=20000, batch=8, lr=3e-4, loss="l1", kl=1e-5, adv=0.0, seed=0,
                       shortcut=True, opt="muon", runlocal=False)
  import ml_collections as mlc
  height, width = common.parse_res(a.res)
  comp = common.parse_triple(a.comp, "comp")
  c = mlc.ConfigDict()
  c.task = "vae"
  c.seed = a.seed
  c.data = common.data_config(frames=a.frames, height=height, width=width, batch_size=a.batch)
  c.vae = vae_section(comp, a.zch, a.ch,
                      channel_mult_for(comp[1], patch=a.patch, temporal_compression=comp[0]),
                      a.patch, bool(a.shortcut))
  c.vae.adv_weight = a.adv
  c.vae.kl_weight = a.kl
  c.vae.recon_loss = a.loss
  c.optim = common.optim_config(lr=a.lr, steps=a.steps, warmup=min(500, a.steps // 10),
                                name=a.opt)
  c.train = common.train_config(steps=a.steps, log_every=50, ckpt_every=1000, sample_every=2000)
  c.mesh = common.mesh_config()
  c.rules = "vae"
  if a.runlocal:
    c.data.batch_size = min(a.batch, 4)
    c.vae.channels = 8
    c.vae.latent_channels = min(a.zch, 4)
    common.shrink_for_local(c)
  return c.lock()

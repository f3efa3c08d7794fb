"""The DiT paper's family (Peebles & Xie, 2023): class-conditional images on 32x32x4 latents.

  sora-jax train --config=configs/dit_paper.py:variant=XL/2 --workdir=W
  sora-jax flops --config=configs/dit_paper.py:variant=B/4

Arguments: variant (S|B|L|XL / 2|4|8), res (pixels; latents are res/8 with 4 channels),
classes (1000 + the null class for CFG), steps, batch, lr, seed, runlocal (tiny, for CPU tests).
Architecture as in the reference: adaLN-zero, GELU MLP (ratio 4), no QK-norm, fixed 2D sin-cos
positions, learned sigma (2x4 output channels), DDPM eps objective with a linear schedule.
"""
import ml_collections as mlc

from configs import common
from configs import vae as vae_config


def model_section(variant: str = "XL/2", classes: int = 1000) -> mlc.ConfigDict:
  name, _, p = variant.partition("/")
  if not p or not p.isdigit():
    raise ValueError(f"config argument 'variant' expects S|B|L|XL/2|4|8 like XL/2, got {variant!r}")
  return mlc.ConfigDict(dict(
      variant=name, patch=(1, int(p), int(p)), width=0, depth=0, heads=0,
      mlp="gelu", mlp_ratio=4.0, qk_norm=False, pos="sincos",
      cond="class", num_classes=classes, class_dropout=0.1, learn_sigma=True, in_channels=4,
      remat_policy="nothing_saveable", scan_layers=True, attention_impl="xla",
      dtype="float32", param_dtype="float32",
  ))


def get_config(arg=None):
  a = common.parse_arg(arg, variant="XL/2", res=256, classes=1000, steps=400000, batch=256,
                       lr=1e-4, seed=0, runlocal=False)
  c = mlc.ConfigDict()
  c.task = "class_image"
  c.seed = a.seed
  c.data = common.data_config(frames=1, height=a.res, width=a.res, batch_size=a.batch)
  # The reference uses the SD image VAE: 8x spatial, 4 latent channels, one frame.
  c.vae_workdir = ""
  c.vae = vae_config.vae_section((1, 8, 8), 4, 128, vae_config.channel_mult_for(8))
  c.vae.scaling_factor = 0.18215
  c.model = model_section(a.variant, a.classes)
  c.diffusion = mlc.ConfigDict(dict(
      objective="eps", t_sampling="uniform", logit_mean=0.0, logit_std=1.0, shift=1.0,
      base_tokens=256, beta_schedule="linear", num_train_timesteps=1000))
  c.sample = mlc.ConfigDict(dict(sampler="ddim", steps=250, guidance_scale=1.5,
                                 steps_per_chunk=50, prompts=()))
  c.optim = common.optim_config(lr=a.lr, steps=a.steps, warmup=0, weight_decay=0.0,
                                ema_decay=0.9999)
  c.optim.schedule = "constant"
  c.optim.grad_clip = 0.0
  c.train = common.train_config(steps=a.steps, log_every=100, ckpt_every=50000,
                                sample_every=50000)
  c.mesh = common.mesh_config()
  c.rules = "dit"
  if a.runlocal:
    c.data.height = c.data.width = 64
    c.data.batch_size = min(a.batch, 4)
    c.vae.channels = 8
    c.model.variant = "Mu"
    c.model.num_classes = min(a.classes, 10)
    c.sample.steps = 4
    c.sample.steps_per_chunk = 2
    common.shrink_for_local(c)
  return c.lock()

"""The DiT paper's family (Peebles & Xie, 2023): class-conditional images on 32x32x4 latents.

For model-size studies only: there is no class_image trainer (nor a train state to shard), so
this config is for FLOP counts of the reference models:
  sora-jax flops --config=configs/dit_paper.py:variant=B/4
`sora_jax.config.validate(config, training=True)` refuses task 'class_image'; train
configs/t2v.py or configs/vae.py instead.

Arguments: variant (S|B|L|XL / 2|4|8), res (pixels; latents are res/8 with 4 channels),
classes (1000 + the null class for CFG), steps, batch, lr, seed, runlocal (tiny, for CPU tests).
Architecture as in the reference: adaLN-zero, GELU MLP (ratio 4), no QK-norm, fixed 2D sin-cos
positions, learned sigma (2x4 output channels), DDPM eps objective with a linear schedule.
Every key and its default: sora_jax/config_sections.py.
"""
import ml_collections as mlc

from configs import common


def model_section(variant: str = "XL/2", classes: int = 1000) -> mlc.ConfigDict:
  name, _, p = variant.partition("/")
  if not p or not p.isdigit():
    raise ValueError(f"config argument 'variant' expects S|B|L|XL/2|4|8 like XL/2, got {variant!r}")
  return common.model_section(
      variant=name, patch=(1, int(p), int(p)), mlp="gelu", qk_norm=False, pos="sincos",
      cond="class", num_classes=classes, learn_sigma=True, in_channels=4)


def get_config(arg=None):
  a = common.parse_arg(arg, variant="XL/2", res=256, classes=1000, steps=400000, batch=256,
                       lr=1e-4, seed=0, runlocal=False)
  c = mlc.ConfigDict()
  c.task = "class_image"
  c.seed = a.seed
  c.data = common.data_section(frames=1, height=a.res, width=a.res, batch_size=a.batch)
  # The reference uses the SD image VAE: 8x spatial, 4 latent channels, one frame; its latents
  # are scaled by 0.18215 to unit std.
  c.vae_workdir = ""
  c.vae = common.vae_section(temporal_compression=1, spatial_compression=8, latent_channels=4,
                             channels=128, shortcut=True)
  c.model = model_section(a.variant, a.classes)
  c.diffusion = common.diffusion_section(objective="eps", t_sampling="uniform", shift=1.0,
                                         latent_scale=0.18215)
  c.sample = common.sample_section(objective="eps", steps=250, guidance_scale=1.5, prompts=())
  c.optim = common.optim_section(lr=a.lr, warmup_steps=0, ema_decay=0.9999,
                                 schedule="constant", grad_clip=0.0)
  c.train = common.train_section(steps=a.steps, log_every=100, ckpt_every=50000,
                                 sample_every=50000)
  c.mesh = common.mesh_section()
  c.rules = "dit"
  if a.runlocal:
    c.data.height = c.data.width = 64
    c.data.batch_size = min(a.batch, 4)
    c.vae.channels = 8
    c.model.variant = "Mu"
    c.model.num_classes = min(a.classes, 10)
    c.sample.steps = 4
    common.shrink_for_local(c)
  return c.lock()

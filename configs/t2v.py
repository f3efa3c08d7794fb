"""Text-to-video: a DiT over spacetime patches of a trained VAE's latents.

  sora-jax train --config=configs/t2v.py:variant=S,patch=1x2x2,res=64,frames=17 \
      --config.vae_workdir=W_VAE --workdir=W

Arguments (the ablation axes): variant (Mu, Ti, S, B, L, XL), patch (pt x ph x pw over the latent
grid), res (H or HxW), frames (1 + tc*k), objective (flow | eps | v), text (bundled | t5),
world (simple | large | standard | full: how much the procedural scenes hold), steps, batch, lr, runlocal (tiny, for CPU tests). Every key and its default:
sora_jax/config_sections.py.
"""
import ml_collections as mlc

from configs import common
from configs import vae as vae_config


def get_config(arg=None):
  a = common.parse_arg(arg, variant="S", patch="1x2x2", res="64", frames=17, objective="flow",
                       text="bundled", comp="4x8x8", zch=16, steps=50000, batch=8, lr=1e-4,
                       seed=0, world="full", runlocal=False)
  height, width = common.parse_res(a.res)
  tc, sc = vae_config.parse_comp(a.comp)
  c = mlc.ConfigDict()
  c.task = "t2v"
  c.seed = a.seed
  c.data = common.data_section(frames=a.frames, height=height, width=width, batch_size=a.batch,
                               world=a.world)
  # The VAE whose latents the DiT models. Its architecture is read from vae_workdir's saved
  # config when given; this section must agree with it.
  c.vae_workdir = ""
  c.vae = common.vae_section(temporal_compression=tc, spatial_compression=sc,
                             latent_channels=a.zch, channels=64, shortcut=True)
  c.model = common.model_section(variant=a.variant, patch=common.parse_triple(a.patch, "patch"))
  c.text = common.text_section(encoder=a.text, max_len=c.data.text_len)
  c.diffusion = common.diffusion_section(objective=a.objective)
  c.sample = common.sample_section(objective=a.objective)
  c.optim = common.optim_section(lr=a.lr, warmup_steps=min(1000, a.steps // 10),
                                 ema_decay=0.9999)
  c.train = common.train_section(steps=a.steps, log_every=50, ckpt_every=1000,
                                 sample_every=5000)
  c.mesh = common.mesh_section()
  c.rules = "dit"
  if a.runlocal:
    c.data.batch_size = min(a.batch, 4)
    c.data.text_len = 16
    c.text.max_len = 16
    c.text.width, c.text.depth, c.text.heads = 32, 1, 2
    c.model.variant = "Mu"
    c.vae.channels = 8
    c.vae.latent_channels = 4
    c.sample.steps = 4
    common.shrink_for_local(c)
  return c.lock()

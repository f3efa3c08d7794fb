"""Text-to-video: a DiT over spacetime patches of a trained VAE's latents.

  sora-jax train --config=configs/t2v.py:variant=S,patch=1x2x2,res=64,frames=17 \
      --config.vae_workdir=W_VAE --workdir=W

Arguments (the ablation axes): variant (Mu, Ti, S, B, L, XL), patch (pt x ph x pw over the latent
grid), res (H or HxW), frames (1 + tc*k), objective (flow | eps | v), text (bundled | t5),
steps, batch, lr, runlocal (tiny, for CPU tests).
"""
import ml_collections as mlc

from configs import common
from configs import vae as vae_config


def model_section(variant="S", patch=(1, 2, 2)):
  return mlc.ConfigDict(dict(
      variant=variant, patch=tuple(patch), width=0, depth=0, heads=0,
      mlp="swiglu", mlp_ratio=4.0, qk_norm=True, pos="rope3d",
      remat_policy="nothing_saveable", scan_layers=True, attention_impl="xla",
      dtype="float32", param_dtype="float32",
  ))


def text_section(text_len=64, encoder="bundled"):
  return mlc.ConfigDict(dict(
      encoder=encoder,      # bundled (trained jointly) | t5 (frozen, from local files)
      t5_path="",           # directory with config.json + model.safetensors
      width=128, depth=2, heads=4, max_len=text_len,
      drop_prob=0.1,        # caption dropout, for classifier-free guidance
  ))


def diffusion_section(objective="flow"):
  return mlc.ConfigDict(dict(
      objective=objective,  # flow | eps | v
      t_sampling="logit_normal", logit_mean=0.0, logit_std=1.0,
      shift="auto", base_tokens=256,
      beta_schedule="linear", num_train_timesteps=1000,
      latent_scale=0.0,     # latents x this have unit std; 0 = estimate at the start of training
  ))


def sample_section(objective="flow"):
  return mlc.ConfigDict(dict(
      sampler="euler" if objective == "flow" else "ddim",
      steps=30, guidance_scale=4.0, steps_per_chunk=10,
      prompts=("a red circle bounces to the right", "a blue square falls"),
  ))


def get_config(arg=None):
  a = common.parse_arg(arg, variant="S", patch="1x2x2", res="64", frames=17, objective="flow",
                       text="bundled", comp="4x8x8", zch=16, steps=50000, batch=8, lr=1e-4,
                       seed=0, runlocal=False)
  height, width = common.parse_res(a.res)
  comp = common.parse_triple(a.comp, "comp")
  c = mlc.ConfigDict()
  c.task = "t2v"
  c.seed = a.seed
  c.data = common.data_config(frames=a.frames, height=height, width=width, batch_size=a.batch)
  # The VAE whose latents the DiT models. Its architecture is read from vae_workdir's saved
  # config when given; this section must agree with it.
  c.vae_workdir = ""
  c.vae = vae_config.vae_section(comp, a.zch, 64, vae_config.channel_mult_for(comp[1]))
  c.model = model_section(a.variant, common.parse_triple(a.patch, "patch"))
  c.text = text_section(c.data.text_len, a.text)
  c.diffusion = diffusion_section(a.objective)
  c.sample = sample_section(a.objective)
  c.optim = common.optim_config(lr=a.lr, steps=a.steps, warmup=min(1000, a.steps // 10),
                                ema_decay=0.9999)
  c.train = common.train_config(steps=a.steps, log_every=50, ckpt_every=1000, sample_every=5000)
  c.mesh = common.mesh_config()
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
    c.sample.steps_per_chunk = 2
    common.shrink_for_local(c)
  return c.lock()

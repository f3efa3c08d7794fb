"""Every config key, its default, its meaning and (for enums) its allowed values: stated once.

`configs/*.py` build their configs from these section builders; `sora_jax.config` derives its
schema (`SCHEMA`, `ENUMS`) from them and fills keys missing from an older run's config.json
(`complete`). To add a key: add it to its builder below with a comment, make its default what
the code did before the key existed (or list it in `BEFORE_KEY_EXISTED`), and read it somewhere;
tests/test_config_schema.py checks both directions statically.

Each builder returns a fresh `ConfigDict` of its section with the defaults, overridden by keyword
arguments (an unknown keyword is a TypeError naming the known keys).
"""
from __future__ import annotations

from typing import Any, Callable

import ml_collections as mlc

DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the fix."""


# The procedural world's names, here so that validating a config imports no data code;
# data/world/sampling.py says what each preset and suffix does.
WORLD_PRESETS = ("simple", "large", "standard", "full")
WORLDS = tuple(p + free + shots for p in WORLD_PRESETS for free in ("", "_free")
               for shots in ("", "_shots"))

# section name -> builder, and section name -> {key: allowed values}; filled by @_section.
SECTIONS: dict[str, Callable[..., mlc.ConfigDict]] = {}
SECTION_ENUMS: dict[str, dict[str, tuple]] = {}


def _section(**enums: tuple):
  """Registers `<name>_section` as the builder of section <name>, with its enum keys."""
  def register(fn):
    name = fn.__name__.removesuffix("_section")
    SECTIONS[name] = fn
    SECTION_ENUMS[name] = dict(enums)
    return fn
  return register


def _build(name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> mlc.ConfigDict:
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    raise TypeError(f"{name}_section() got unknown key(s) {', '.join(unknown)}; config.{name} "
                    f"has {', '.join(sorted(defaults))}")
  defaults.update(overrides)
  return mlc.ConfigDict(defaults)


# ------------------------------------------------------------------------------------ top level
TASKS = ("vae", "t2v", "class_image")
TRAINABLE_TASKS = ("vae", "t2v")   # class_image (configs/dit_paper.py): FLOP counts only
TOP_LEVEL: dict[str, Any] = dict(
    task="t2v",          # vae | t2v | class_image (no trainer: for `sora-jax flops` only)
    seed=0,              # every random stream (init, data order, sampling) derives from it
    rules="dit",         # logical-axis sharding rules: dit | vae | text (parallel/rules.py)
    vae_workdir="",      # t2v: the trained VAE's run directory; "" = untrained VAE (plumbing)
)
TOP_LEVEL_ENUMS: dict[str, tuple] = dict(task=TASKS, rules=("dit", "vae", "text"))
# The sections (and top-level keys) a config of each task holds.
TASK_SECTIONS: dict[str, tuple[str, ...]] = {
    "vae": ("data", "vae", "optim", "train", "mesh"),
    "t2v": ("data", "vae", "model", "text", "diffusion", "sample", "optim", "train", "mesh"),
    "class_image": ("data", "vae", "model", "diffusion", "sample", "optim", "train", "mesh"),
}
TASK_TOP_LEVEL: dict[str, tuple[str, ...]] = {
    "vae": ("task", "seed", "rules"),
    "t2v": ("task", "seed", "rules", "vae_workdir"),
    "class_image": ("task", "seed", "rules", "vae_workdir"),
}
TASK_RULES = {"vae": "vae", "t2v": "dit", "class_image": "dit"}


# ----------------------------------------------------------------------------------- sections
@_section(name=("shapes_world", "video_folder"), source=("procedural", "tfds"),
          caption=("short", "detailed", "mixed"), world=WORLDS)
def data_section(**overrides) -> mlc.ConfigDict:
  """config.data: what clips to read and how to batch them (data/pipeline.py, data/builders.py)."""
  return _build("data", dict(
      name="shapes_world",      # the dataset: shapes_world (procedural) | video_folder (yours)
      source="procedural",      # procedural (rendered on the fly, infinite) | tfds (prepared)
      builder_config="",        # shapes_world builder config; "" = derived from the resolution
      data_dir="",              # tfds data_dir; "" = ~/tensorflow_datasets
      folder="",                # video_folder: the user's directory of videos
      frames=17,                # frames per clip: 1 + vae.temporal_compression * k
      height=64,                # pixels; a multiple of vae.spatial_compression
      width=64,                 # pixels; a multiple of vae.spatial_compression
      fps=8.0,                  # frames per second the clips are rendered / resampled at
      world="full",             # shapes_world: simple (one object) | large (simple, 2x radius) | standard | full,
                                # each also as <world>_free (start independent of direction)
      caption="mixed",          # short | detailed | mixed (a per-clip coin flip)
      text_len=64,              # tokens per caption (byte-level tokenizer)
      batch_size=8,             # global batch size over all processes
      split="train",            # the training split
      eval_split="test",        # the held-out split of periodic and final evaluations
      num_workers=0,            # grain worker processes; 0 = in-process
      num_epochs=0,             # 0 = repeat forever
      cache_dir="",             # t2v: encode cache_clips clips once and train on their latents
      cache_clips=4096,         # clips in the latent cache (cache_dir)
      sizes="",                 # t2v mix of sizes, "17x64x64:2,17x64x112,1x64x64" (FxHxW[:weight])
      pack_tokens=0,            # t2v: pack clips into rows of this many tokens (NaViT); 0 = off
      pack_clips=0,             # packed: caption slots (clips) per row; 0 = as many as fit
  ), overrides)


def channel_mult_for(spatial_compression: int, base=(1, 2, 4, 4), patch: int = 1,
                     temporal_compression: int = 1) -> tuple[int, ...]:
  """One level per downsample (the larger of log2(s / patch) and log2(tc)) plus the input."""
  levels = max(int(spatial_compression // patch).bit_length(),
               int(temporal_compression).bit_length())
  if levels > len(base):
    return tuple(base) + (base[-1],) * (levels - len(base))
  return tuple(base[:levels])


@_section(recon_loss=("l1", "l2"), dtype=DTYPES, param_dtype=DTYPES,
          shortcut_layout=("channel", "subpixel"))
def vae_section(**overrides) -> mlc.ConfigDict:
  """config.vae: the causal 3D-conv VAE (models/vae.py) and its training losses (vae task).

  channel_mult defaults to one level per downsample of the given compression and patch size.
  """
  tc = int(overrides.get("temporal_compression", 4))
  sc = int(overrides.get("spatial_compression", 8))
  patch = int(overrides.get("patch_size", 1))
  return _build("vae", dict(
      temporal_compression=tc,  # frames per latent frame after the first: 1 | 2 | 4
      spatial_compression=sc,   # pixels per latent pixel along height and width: 8 | 16
      latent_channels=16,       # channels of the latent the DiT models
      # patch_size: pixel-unshuffle stem (LTX-Video style): the first conv already runs at H/p,
      # which is what makes 64x64 video affordable on a CPU. Spatial downsamples = log2(s/p).
      patch_size=patch,
      channels=64,              # width of the first level
      channel_mult=channel_mult_for(sc, patch=patch, temporal_compression=tc),  # width per level
      num_res_blocks=1,         # residual blocks per level
      mid_attention=False,      # self-attention in the middle block
      shortcut=False,           # DC-AE non-parametric down/up shortcuts
      # shortcut_layout: 'channel' = DC-AE's (average pooling / nearest upsampling per channel);
      # 'subpixel' = the layout before that fix, kept so that older weights load identically.
      shortcut_layout="channel",
      dtype="float32",          # activations
      param_dtype="float32",    # parameters
      recon_loss="l1",          # l1 | l2 reconstruction loss
      kl_weight=1e-6,           # weight of the KL term
      adv_weight=0.0,           # weight of the adversarial (patch discriminator) loss; 0 = off
      adv_start_step=2000,      # step at which the adversarial loss starts
      adv_adaptive=False,       # scale adv_weight by |grad recon| / |grad adv| at the output (VQGAN)
      disc_channels=32,         # discriminator base width
      disc_layers=3,            # discriminator downsampling layers
      perceptual_weight=0.0,    # weight of the perceptual loss; 0 = off
      perceptual_path="",       # perceptual-loss network weights (local file); "" = none
      # train the decoder only: the encoder (so the latent space, and any DiT trained on it) is
      # kept as train.init_from left it, as a new decoder for an existing model. Needs init_from.
      freeze_encoder=False,
      # a decoder for a DiT's own latents (train/decoder_refining.py; needs freeze_encoder):
      # refine_t2v names a t2v run (workdir or export) trained on this VAE's latents; clips of
      # config.data noised to each strength and denoised by it under their captions (SDEdit),
      # paired with the clips, cached in data.cache_dir; "" = off
      refine_t2v="",
      refine_clips=1024,        # pairs generated (each samples once: minutes on a CPU)
      refine_strengths=(0.3, 0.45, 0.6, 0.75),   # SDEdit noise levels, cycled over the clips
      refine_share=0.5,         # share of each batch decoded from generated latents; the rest
                                # from the encoder's, so it still decodes real videos
      encode_chunk=0,           # latent frames per inference encode/decode chunk; 0 = one pass
      tile=0,                   # spatial tile size in pixels for encode/decode; 0 = no tiling
      tile_overlap=16,          # pixels of overlap between tiles (blended)
  ), overrides)


@_section(mlp=("swiglu", "gelu"), pos=("rope3d", "sincos", "rope3d+abs"), cond=("text", "class"),
          remat_policy=("auto", "nothing_saveable", "dots_saveable",
                        "dots_with_no_batch_dims_saveable", "none"),
          attention_impl=("xla", "cudnn", "ring", "allgather"), dtype=DTYPES,
          param_dtype=DTYPES)
def model_section(**overrides) -> mlc.ConfigDict:
  """config.model: the spacetime DiT (models/dit.py)."""
  return _build("model", dict(
      variant="S",              # Mu | Ti | S | B | L | XL (models/dit.py decode_variant)
      patch=(1, 2, 2),          # (pt, ph, pw) latent frames x pixels per token
      width=0,                  # 0 = from variant
      depth=0,                  # 0 = from variant
      heads=0,                  # 0 = from variant
      mlp="swiglu",             # swiglu | gelu
      mlp_ratio=4.0,            # hidden width / width
      qk_norm=True,             # RMS-normalised queries and keys
      pos="rope3d",             # rope3d (rotary over t, h, w) | sincos (fixed, added) |
                                # rope3d+abs (both: rotary, plus sin-cos of each token's t, h, w)
      rope_theta=10000.0,       # RoPE base frequency
      layout_readout=False,     # text: each token position also reads the caption by its
                                # place alone (where-words at t ~ 1; RESULTS.md issue 13)
      layout_prior=False,       # with layout_readout: what it reads is also trained to be the
                                # caption's expected clean clip, at every t (weight:
                                # diffusion.layout_prior_weight; RESULTS.md issue 13, session 27)
      out_conv="",              # 'KTxKHxKW' (e.g. 1x3x3): a zero-initialised residual conv on
                                # the unpatchified output, so neighbouring tokens' patches
                                # agree on edges (U-ViT); '' = none; not with packed rows
      cond="text",              # text (cross-attention to the text encoder) | class (labels)
      num_classes=0,            # cond='class': labels, plus one null label for CFG
      learn_sigma=False,        # also predict the variance (doubles the output channels)
      in_channels=0,            # latent channels; 0 = vae.latent_channels (eval/flops.py)
      out_channels=0,           # 0 = in_channels (2x with learn_sigma)
      remat_policy="auto",      # what a block keeps for backward; auto = its matmuls on a CPU
                                # (dots_with_no_batch_dims_saveable), nothing on GPU/TPU
                                # (nothing_saveable); none = no remat, keep everything
      scan_layers=True,         # nn.scan over blocks (fast compile); False = unrolled
      attention_impl="xla",     # xla | cudnn (bf16) | ring | allgather (both: mesh.context > 1)
      dtype="float32",          # activations
      param_dtype="float32",    # parameters
  ), overrides)


@_section(encoder=("bundled", "t5"), tokenizer=("byte", "words"))
def text_section(**overrides) -> mlc.ConfigDict:
  """config.text: the caption encoder (models/text_encoder.py, models/t5.py)."""
  return _build("text", dict(
      encoder="bundled",        # bundled (trained jointly) | t5 (frozen, from local files)
      tokenizer="byte",         # bundled encoder: byte (UTF-8 bytes) | words (hashed words)
      word_buckets=8192,        # tokenizer='words': ids words hash into
      t5_path="",               # encoder='t5': directory with config.json + model.safetensors
      width=128,                # bundled encoder width
      depth=2,                  # bundled encoder layers
      heads=4,                  # bundled encoder heads
      max_len=64,               # caption tokens (= data.text_len)
      drop_prob=0.1,            # caption dropout, for classifier-free guidance
  ), overrides)


@_section(objective=("flow", "eps", "v"), t_sampling=("logit_normal", "uniform"),
          beta_schedule=("linear", "scaled_linear", "cosine"))
def diffusion_section(**overrides) -> mlc.ConfigDict:
  """config.diffusion: the training objective (diffusion/objective.py)."""
  return _build("diffusion", dict(
      objective="flow",         # flow (rectified flow) | eps | v (DDPM)
      t_sampling="logit_normal",  # flow: logit_normal | uniform training timesteps
      logit_mean=0.0,           # logit_normal mean
      logit_std=1.0,            # logit_normal std
      shift="auto",             # flow timestep shift: 'auto' (from the token count) or a number
      base_tokens=256,          # 'auto': tokens at which the shift is base_shift
      base_shift=1.0,           # 'auto': shift at base_tokens, scaled by sqrt(tokens / base)
      max_shift=None,           # 'auto': cap on the shift; None = no cap
      beta_schedule="linear",   # eps / v: linear | scaled_linear | cosine
      num_train_timesteps=1000,  # eps / v: discrete timesteps
      latent_scale=0.0,         # latents x this have unit std; 0 = estimated when training starts
      frame_tasks="",           # t2v frame conditioning tasks "none:0.5,first:0.3,forcing:0.2"
                                # (diffusion/conditioning.py); "" = text-to-video only
      known_noise=0.0,          # frame tasks: known frames noised to t ~ U(0, this) in training
      object_weight=0.0,        # training loss weight 1 + this x (distance of a latent pixel
                                # from its frame's median, mean 1 per clip): more of the loss
                                # on the object than the backdrop; 0 = plain mean (flow.py)
      layout_prior_weight=1.0,  # model.layout_prior: weight of its loss (MSE to the clean clip)
      layout_prior_only=False,  # train the layout prior's loss alone (text encoder, readout,
                                # head; the DiT's blocks are not run): fitted alone it learns
                                # where the caption puts the object (RESULTS.md issue 13)
  ), overrides)


SAMPLER_FOR_OBJECTIVE = {"flow": "euler", "eps": "ddim", "v": "ddim"}


@_section(sampler=("euler", "heun", "ddim"), timestep_spacing=("trailing", "leading"))
def sample_section(objective: str = "flow", **overrides) -> mlc.ConfigDict:
  """config.sample: generation (diffusion/samplers.py); `objective` picks the default sampler."""
  return _build("sample", dict(
      sampler=SAMPLER_FOR_OBJECTIVE.get(objective, "euler"),  # euler | heun (flow); ddim (eps, v)
      steps=30,                 # denoising steps
      guidance_scale=4.0,       # classifier-free guidance; 1 = off
      guidance_interval=(0.0, 1.0),  # (lo, hi): guide only where lo <= t <= hi (t = 1 noise),
                                # the conditional prediction elsewhere; (0, 1) = every step
      extend_guidance_scale=0.0,  # a long video's windows after the first (--windows, eval
                                # long): 0 = guidance_scale. Lower keeps the background's colour
                                # from walking across windows (CFG amplifies each window's error)
      timestep_spacing="trailing",  # ddim: trailing (starts at t = 1) | leading
      shift="train",            # flow: the sampling grid's timestep shift; 'train' = the one the
                                # model trained with (diffusion.shift), or a number
      layout_prior_strength=0.0,  # model.layout_prior: start from the caption's expected clip
                                # noised to this t (SDEdit, flow) instead of pure noise; 0 = off
      prompts=("a red circle bounces to the right", "a blue square falls"),  # periodic samples
  ), overrides)


@_section(name=("adamw", "muon"), schedule=("cosine", "constant"))
def optim_section(**overrides) -> mlc.ConfigDict:
  """config.optim: the optimizer and its schedule (train/state.py)."""
  return _build("optim", dict(
      name="adamw",             # adamw | muon (matrices/kernels; AdamW for everything else)
      muon_lr=0.02,             # muon: rate of matrices/kernels (lr stays the AdamW rate)
      lr=1e-4,                  # peak learning rate
      b1=0.9,                   # Adam beta1
      b2=0.99,                  # Adam beta2
      eps=1e-8,                 # Adam epsilon
      weight_decay=0.0,         # decoupled weight decay
      warmup_steps=1000,        # linear warmup from 0
      schedule="cosine",        # cosine (to min_lr_ratio * lr) | constant after warmup
      min_lr_ratio=0.1,         # cosine: final lr / peak lr
      grad_clip=1.0,            # global-norm clip; 0 = off
      ema_decay=0.999,          # EMA of the params (sampling and export use it); in [0, 1)
  ), overrides)


@_section(nonfinite=("skip", "halt"))
def train_section(**overrides) -> mlc.ConfigDict:
  """config.train: the loop (train/loop.py)."""
  return _build("train", dict(
      steps=50000,              # optimizer steps
      log_every=50,             # steps between metric logs
      ckpt_every=1000,          # steps between checkpoints
      sample_every=5000,        # steps between sample videos / reconstructions; 0 = off
      eval_every=0,             # steps between held-out evaluations (data.eval_split); 0 = off
      eval_num=8,               # held-out prompts / clips per periodic evaluation
      # t2v: held-out clips for the loss report (flow loss, text and word gains); 0 = eval_num.
      # A 16-clip word gain moves by ~1 % with the clips (RESULTS.md, issue 13, session 46).
      eval_loss_num=0,
      keep_checkpoints=3,       # checkpoints kept on disk
      async_checkpoint=True,    # write checkpoints in the background
      dry_run=False,            # compile and report memory / FLOPs, do not train
      init_from="",             # a run dir (workdir or export) whose EMA weights start this run
      nonfinite="skip",         # a non-finite loss/grad/param: skip (drop the update) | halt
      max_nonfinite=10,         # skip: halt after this many non-finite steps in a row
  ), overrides)


@_section()
def mesh_section(**overrides) -> mlc.ConfigDict:
  """config.mesh: device mesh sizes (parallel/mesh.py); -1 = fill with the remaining devices."""
  return _build("mesh", dict(
      data=-1,                  # data parallel (batch)
      fsdp=1,                   # fully sharded data parallel (batch and params)
      tensor=1,                 # tensor parallel (heads, MLP)
      context=1,                # sequence (token) parallel: ring / allgather attention
      distributed=False,        # jax.distributed.initialize (multi-process) first
  ), overrides)


# ---------------------------------------------------------------------- older run directories
# Keys removed from the schema, with the reason; `complete` drops them from an older config.json.
RETIRED: dict[str, str] = {
    "data.shuffle_seed": "never read: the data order follows config.seed",
    "vae.scaling_factor": "never read: the DiT's latent scale is diffusion.latent_scale",
    "model.class_dropout": "never read: the class_image task has no trainer (FLOPs only)",
    "sample.steps_per_chunk": "never read: sampling runs its steps in one lax.scan",
}
# Keys whose value for a config written before the key existed is not today's default, because
# the code then behaved otherwise; `complete` fills these instead of the builder default.
BEFORE_KEY_EXISTED: dict[str, Any] = {
    # Runs before the DC-AE shortcut fix used the sub-pixel layout (the shipped demo VAE).
    "vae.shortcut_layout": "subpixel",
}

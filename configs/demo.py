"""The small CPU config behind the README's main job (`sora-jax demo`).

Two stages share one data setup (17 frames of 64x64 from the procedural world):
  sora-jax train --config=configs/demo.py:stage=vae --workdir=workdirs/demo/vae
  (optional: sora-jax train --config=configs/demo.py:stage=vae_critic \
       --workdir=workdirs/demo/vae_critic, then give the t2v stage that vae_workdir;
   or stage=vae_decoder: the critic on the decoder alone, a drop-in decoder for trained DiTs)
  sora-jax train --config=configs/demo.py:stage=t2v --workdir=workdirs/demo/t2v \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_shots --workdir=workdirs/demo/t2v_shots \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_readout --workdir=workdirs/demo/t2v_readout \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_prior --workdir=workdirs/demo/t2v_prior \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_layout --workdir=workdirs/demo/t2v_layout \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_mix --workdir=workdirs/demo/t2v_mix \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_detail --workdir=workdirs/demo/t2v_detail \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=t2v_detail2 --workdir=workdirs/demo/t2v_detail2 \
      --config.vae_workdir=workdirs/demo/vae
  sora-jax train --config=configs/demo.py:stage=vae_refiner --workdir=workdirs/demo/vae_refiner
(RECIPE_STAGES: the DiT stages in order, each starting from the one before. recipe=fast on
vae, t2v, t2v_prior, t2v_layout, t2v_detail and vae_refiner: the recipe cut to 2 hours, FAST_STEPS and FAST_OPTIM.)
The shipped demo weights (sora_jax/assets/demo) are the EMA weights of the vae_refiner run (the
vae run's encoder, a decoder fitted to t2v_detail2's latents) and of t2v_detail2;
see README. VAE_PHASES continue the VAE run to the 30 dB model of experiments/vae_30db.sh.
Every key and its default: sora_jax/config_sections.py.
"""
from configs import t2v as t2v_config
from configs import vae as vae_config

# Warm restarts of one VAE run (same workdir): L1 to 2400 steps, L1 stretched to 3900, then L2
# (PSNR is an MSE metric) stretched to 9900, the KL weight scaled down with the loss. Measured on
# the session-3 layout (comp=4x8x8,zch=16,world=full; experiments/vae_30db.sh pins it); held-out
# 17x64x64 PSNR and the curve: benchmarks/RESULTS.md.
VAE_PHASES = ("steps=2400", "steps=3900", "steps=9900,loss=l2,kl=1e-6")
_VAE_LOSS = dict(loss="l1", kl=1e-5)
# stage=vae_critic: the vae stage's weights fine-tuned on the DiT's world against a 3D PatchGAN
# critic, its push scaled to the reconstruction's (VQGAN's adaptive balance). The world
# evaluator reads shape from corners and solidity, which an L1 decoder blurs: 300 steps raised
# the shape score of 64 reconstructed test clips (the ceiling of any DiT on these latents) from
# 0.63 to 0.69 at the same PSNR (900 steps: 0.70, +0.7 dB); L1 alone on that world left it at
# 0.63 (experiments/results/vae_critic; RESULTS.md, issue 13, session 12).
VAE_CRITIC_STEPS, VAE_CRITIC_WEIGHT = 300, 0.25
VAE_CRITIC_FROM = "workdirs/demo/vae"
# stage=vae_decoder: the same critic fine-tune with the encoder frozen (vae.freeze_encoder). The
# latents stay those the DiT stages were trained on, so the new decoder replaces the old one under
# an already trained text-to-video model (Stable Diffusion's ft-MSE decoder is the precedent).
VAE_DECODER_STEPS, VAE_DECODER_WEIGHT = 300, 0.25
# stage=vae_refiner: the decoder fine-tuned on the last DiT stage's own latents (vae.refine_t2v,
# train/decoder_refining.py): clips noised to t = 0.3-0.75 and denoised by the DiT under their
# captions, paired with the clips; half of each batch decoded from those latents, half from the
# encoder's. 17-frame clips (the DiT's), Adam 1e-4 cosine, no clip. Under the unchanged shipped
# DiT: shape 0.44 -> 0.48 (test) and 0.49 -> 0.53 (unseen), circles 0.22 -> 0.31, +0.5 dB on real
# clips; 2048 pairs and 600 steps bought nothing more (RESULTS.md, issue 13, session 32). Pairs
# from the '_shots' world, so the decoder also sees the DiT's cuts and close-ups.
REFINER_STEPS, REFINER_LR, REFINER_CLIPS = 300, 1e-4, 1024
REFINER_FROM = "workdirs/demo/t2v_detail2"
# 6000 steps with frame tasks and absolute positions (session 14): text-to-video scores as the
# 8000-step text-only model did on 64 held-out prompts per split (colour 0.99 / 1.00, direction
# 0.60 / 0.64 against 0.58 / 0.61, shape 0.39 / 0.45 against 0.47 / 0.48), and the same weights
# do every frame-conditioned mode (image-to-video and extension keep the object and its motion,
# colour edits 0.88, loops close; experiments/results/modes/s14_abs_tasks, RESULTS.md issue 13 session 14).
T2V_STEPS = 6000
DIT_WORLD = "large"
# Absolute sin-cos (t, h, w) beside RoPE: a rotary-only DiT sees offsets, so on pure noise it has
# no place to put the prompted layout (held-out loss -2 % at 1500 steps; session 13).
T2V_POS = "rope3d+abs"
# AdamW at 1e-3 reaches in 1500 steps the held-out flow loss 3e-4 reached in ~4000
# (experiments/results/optimizer; RESULTS.md, issue 13, session 11).
T2V_LR = 1e-3
# The timestep shift at the demo's 80 tokens (other sizes scale it by sqrt(tokens / 80)): 3 trains
# mostly at high noise, where the caption decides the clip; the DiT then reads its text from
# step 500 (text gain 3.4 % vs 0.02 % at the old 0.56; experiments/results/shift_large).
T2V_SHIFT_TOKENS, T2V_SHIFT = 80, 3.0
# stage=t2v_shots: the t2v stage's weights fine-tuned on DIT_WORLD + '_shots' (half the clips cut
# once between the wide view and a close-up, and their captions say so), everything else the t2v
# stage's. 1500 steps at half the learning rate (26 min on the box): on 32 held-out two-shot
# prompts a cut 0.44 (the t2v stage 0.09; 0.19 unasked on one-shot prompts), the close-up the
# larger shot 0.52 (0.08), colour kept across the cut 0.96 (0.53); one-shot text-to-video on 64
# held-out prompts per split: colour 0.99 / 1.00, direction 0.62 / 0.63 (0.60 / 0.64), shape
# 0.34 / 0.37 (0.39 / 0.45) (experiments/results/multishot; RESULTS.md, issue 15, session 17).
SHOTS_STEPS, SHOTS_LR, SHOTS_WARMUP = 1500, 5e-4, 150
SHOTS_FROM = "workdirs/demo/t2v"
# stage=t2v_readout, t2v_prior, t2v_layout: where the caption puts the object (issue 13). A layout
# prior (model.layout_prior: the caption's expected clean clip, read by position from the text)
# trained jointly with the flow loss for 3000 steps stays a centred blob: that loss pays for layout
# only at t ~ 1. Fitted ALONE on the readout those steps trained (diffusion.layout_prior_only:
# text encoder, readout and head; the DiT's blocks not run), it puts "left" at x 0.33 and "right"
# at 0.64; then a short joint fine-tune re-fits the DiT to the retrained text, and sampling starts
# from the prior noised to t = 0.9. On 16384 cached clips (8x the t2v stage's: the prior is a
# regression on the caption alone). Fitted alone on a fresh readout straight after the shots stage
# it learns left/right but not up/down, and the model's direction is 0.75 / 0.72 (test / unseen)
# against 0.77 / 0.79 (RESULTS.md issue 13, sessions 27-29).
READOUT_STEPS, READOUT_LR, READOUT_WARMUP = 3000, 1e-3, 100
READOUT_FROM = "workdirs/demo/t2v_shots"
PRIOR_STEPS, PRIOR_LR, PRIOR_BATCH = 3000, 1e-3, 32
PRIOR_FROM = "workdirs/demo/t2v_readout"
LAYOUT_STEPS, LAYOUT_LR, LAYOUT_WARMUP = 1000, 5e-4, 50
LAYOUT_FROM = "workdirs/demo/t2v_prior"
LAYOUT_CACHE_CLIPS, LAYOUT_PRIOR_STRENGTH = 16384, 0.9
LAYOUT_STAGES = ("t2v_readout", "t2v_prior", "t2v_layout")
_DETAIL_STAGES = ("t2v_mix", "t2v_detail", "t2v_detail2")   # the stages at training shift 1
# stage=t2v_detail: the mix stage's weights trained DETAIL_STEPS more at timestep shift 1 (the
# other stages: 3), still sampled at 3. Shift 3 puts three quarters of the steps at t > 0.6, where
# the caption decides the clip; a real circle noised to t = 0.4 came back a circle in only 0.48 of
# the frames. 1000 steps of it against 1000 more steps at shift 3 (same data): held-out flow loss
# at t = 0.1 0.527 vs 0.606, test shape 0.49 vs 0.46 (two seeds), circles +0.04; direction unchanged
# (RESULTS.md, issue 13, sessions 30-31). On 4096 cached clips, as measured. 4000 steps (34 min)
# against 1000 (256 held-out prompts per split, the same decoder): direction 0.80 / 0.78 against
# 0.77 / 0.73 (test / unseen), shape 0.56 / 0.63 against 0.55 / 0.58, held-out flow loss 0.302
# against 0.321; 1000 steps at batch 64, the same compute, bought half of that (session 40).
# One-shot clips only: on the two-shot world (stage=t2v_detail,world=large_shots) the detail stage
# brings the two-shot cut back (0.49 of 96 prompts against 0.11) but costs unseen direction 0.78
# -> 0.72 and unseen shape 0.63 -> 0.59 (RESULTS.md, issue 13, session 41).
DETAIL_STEPS, DETAIL_LR, DETAIL_SHIFT, DETAIL_CACHE_CLIPS = 4000, 5e-4, 1.0, 4096
DETAIL_FROM = "workdirs/demo/t2v_mix"
# stage=t2v_detail2: the detail stage again from its own weights (a warm restart: the same
# settings, a second cosine cycle of DETAIL_STEPS; its cache is the detail stage's). On 256
# held-out prompts per split over three sampling seeds, against the detail stage alone under the
# same decoder: test shape 0.581 -> 0.607 (+0.030 / +0.033 / +0.015 seed by seed), circles
# 0.39 -> 0.47, unseen shape 0.628 -> 0.661, direction unchanged (0.82 / 0.76) (RESULTS.md,
# issue 13, session 42). Whether one 8000-step cycle would do as well is not measured.
DETAIL2_FROM = "workdirs/demo/t2v_detail"
# stage=t2v_mix: the detail stage's settings on the size mix (issue 14), square clips weighted 8
# so it sees as many square clips in 1800 steps as a 1000-step square detail stage. Last in a
# recipe it costs square shape (256 held-out prompts per split: 0.518 / 0.566 against 0.554 /
# 0.599); followed by the square detail stage it does not (0.548 / 0.601), and that model keeps
# colour and direction at 16:9, 9:16 and twice the duration within 10 % of the square size
# (RESULTS.md, issue 14, session 38); in the shipped recipe since session 39, between
# t2v_layout and t2v_detail.
MIX_STAGE_STEPS, MIX_STAGE_FROM = 1800, "workdirs/demo/t2v_layout"
MIX_STAGE_SIZES = "17x64x64:8,17x64x112,17x112x64,33x64x64,1x64x64"
# The DiT stages of `sora-jax demo --train`, in order: each stage's default init_from is the
# workdir of the one before (the vae stage first, vae_refiner last).
RECIPE_STAGES = ("t2v", "t2v_shots", *LAYOUT_STAGES, "t2v_mix", "t2v_detail", "t2v_detail2")
# recipe=fast: the recipe cut to issue 13's 2-hour budget on the 2-core box (the vae stage as in
# the full recipe, ~50 min, then ~65 min of DiT and refiner): one cache of FAST_CACHE_CLIPS clips
# for every DiT stage; the t2v stage trains the layout readout and prior from step 0 (so no shots
# or readout stage: session 36); then the prior fitted alone, a short joint stage and one detail
# stage; no size-mix stage. What it scores against the full recipe: RESULTS.md, issue 13,
# session 43. `sora-jax demo --train --recipe=fast` runs it into workdirs/demo_fast. The split
# is kept: t2v 1000 / detail 4000 lost shape (0.35 / 0.32 against 0.40 / 0.40), a text-only t2v
# stage changed nothing, 2500 more detail steps left circles at 0.06 (session 44).
FAST_STEPS = {"t2v": 2500, "t2v_prior": 1000, "t2v_layout": 500, "t2v_detail": 2500}
# The fast t2v stage trains with Muon (optim.muon_lr on matrices, AdamW at T2V_LR on the rest),
# not AdamW: it learns the shape word five times sooner (in-loop shape-word gain 1.55 % against
# 0.30 % after 2500 steps) at 1.7 steps/s against 2.2 (+6 min). Through the same later stages:
# test 0.83 / 0.48 direction / shape against 0.75 / 0.40, unseen 0.75 / 0.47 against 0.72 / 0.40
# (RESULTS.md, issue 13, session 45).
FAST_OPTIM = {"t2v": "muon"}
FAST_RECIPE_STAGES = tuple(FAST_STEPS)
FAST_CACHE_CLIPS = 4096
RECIPES = {"full": RECIPE_STAGES, "fast": FAST_RECIPE_STAGES}
# stage=t2v,mix=1: the size mix (frames x height x width:weight); 80, 140, 140, 144, 16 tokens.
# Not the shipped recipe: at 6000 steps it matched the square stage on colour at every size and
# trailed it on direction (0.55 vs 0.61 over four sizes, 64 prompts each) at 1.8 vs 2.2 steps/s
# (RESULTS.md, issue 14, session 25).
MIX = "17x64x64:2,17x64x112,17x112x64,33x64x64,1x64x64"
# stage=t2v (tasks=1, the default; tasks=0 trains text-to-video only): the frame-conditioning
# task mix (image-to-video, extension, connect, ...).
FRAME_TASKS = "none:0.5,first:0.2,last:0.1,first_last:0.05,keyframes:0.05,retake:0.05,forcing:0.05"
# Channel multipliers per compression at the patch-4 stem. 4x4x4 keeps every level at 16x16, so
# it runs at width 64 throughout: one VAE step then costs less than the 4x8x8 VAE's (1.4 vs 1.6
# CPU-s at batch 4; (1, 2, 2) would cost 3.3).
# 1x8x8 (an image VAE applied per frame) and 4x16x16: the VAE-compression study's other points.
_VAE_MULT = {"4x8x8": (1, 2, 2), "4x4x4": (1, 1, 1), "1x8x8": (1, 2), "4x16x16": (1, 2, 2)}


def _vae_mult(comp: str) -> tuple[int, ...]:
  if comp not in _VAE_MULT:
    raise ValueError(f"configs/demo.py: config argument comp={comp!r} has no VAE layout here; "
                     f"use one of {', '.join(_VAE_MULT)}")
  return _VAE_MULT[comp]


def _text_args(text: str) -> tuple[str, int]:
  kind, _, n = text.partition(":")
  if kind not in ("byte", "words") or not n.isdigit():
    raise ValueError(f"configs/demo.py: config argument text={text!r} is not TOKENIZER:LENGTH; "
                     "use e.g. text=words:96 (hashed words) or text=byte:48 (bytes)")
  return kind, int(n)


def get_config(arg=None):
  from configs import common
  # Defaults = the shipped demo weights. world: the VAE learns the full world (every backdrop,
  # pillar and pan; 27.8 dB), the DiT the 'large' one (one object at twice the radius): there
  # the captions explain 100x more of the loss and the DiT follows them (issue 13,
  # experiments/results/worlds). text: whole captions as hashed words (byte:48 cut 61 % of the
  # detailed ones). The session-6 alternative (world=simple,comp=4x4x4,zch=8,patch=1x4x4) is in
  # benchmarks/RESULTS.md, issue 13.
  a = common.parse_arg(arg, stage="t2v", steps=0, world="", comp="4x8x8", zch=16,
                       patch="1x2x2", text="words:96", mix=False, tasks=True, runlocal=False,
                       recipe="full", **_VAE_LOSS)
  if a.recipe not in RECIPES:
    raise ValueError(f"configs/demo.py: config argument recipe={a.recipe!r} is not known; use "
                     f"one of {', '.join(RECIPES)}")
  fast = a.recipe == "fast"
  if fast and a.stage not in ("vae", "vae_refiner", *FAST_RECIPE_STAGES):
    raise ValueError(f"configs/demo.py: stage={a.stage!r} is not in recipe=fast; its stages are "
                     f"vae, {', '.join(FAST_RECIPE_STAGES)}, vae_refiner")
  shots = a.stage == "t2v_shots"
  layout = a.stage in (*LAYOUT_STAGES, *_DETAIL_STAGES)
  world = a.world or {"vae": "full", "t2v_shots": DIT_WORLD + "_shots",
                       "vae_refiner": DIT_WORLD + "_shots"}.get(a.stage, DIT_WORLD)
  local = ",runlocal" if a.runlocal else ""
  critic = a.stage in ("vae_critic", "vae_decoder")
  if not a.steps:
    a.steps = {"vae_critic": VAE_CRITIC_STEPS, "vae_decoder": VAE_DECODER_STEPS, "t2v_shots": SHOTS_STEPS,
               "t2v_readout": READOUT_STEPS, "t2v_prior": PRIOR_STEPS,
               "t2v_layout": LAYOUT_STEPS, "t2v_detail": DETAIL_STEPS, "t2v_detail2": DETAIL_STEPS,
               "t2v_mix": MIX_STAGE_STEPS,
               "vae_refiner": REFINER_STEPS}.get(a.stage, 0)
    if fast:
      a.steps = FAST_STEPS.get(a.stage, a.steps)
  if a.stage == "vae_refiner":
    c = _refiner_stage(a, world)
  elif a.stage in ("vae", "vae_critic", "vae_decoder"):
    # Trained on 9-frame clips: the causal, fully convolutional VAE applies unchanged to 17-frame
    # (or minute-long, chunked) clips, and 9 frames halve the CPU cost of a step.
    # patch=4 stem + DC-AE shortcuts + Muon: measured on this CPU to learn texture far faster
    # than the patch-2 / AdamW VAE of session 1 (20.7 dB after 1000 steps); see RESULTS.md.
    c = vae_config.get_config(f"res=64,frames=9,comp={a.comp},zch={a.zch},ch=64,patch=4,batch=4,"
                              "lr=1e-3,"
                              f"opt=muon,loss={a.loss},kl={a.kl}"
                              + (f",steps={a.steps}" if a.steps else ",steps=2400")
                              + local)
    c = c.unlock()
    c.data.world = world
    if not a.runlocal:
      c.vae.channel_mult = _vae_mult(a.comp)
      c.optim.warmup_steps = 30
      c.train.log_every, c.train.ckpt_every, c.train.sample_every = 25, 250, 500
      c.data.eval_split = "test"
    if critic:
      c.vae.adv_weight, c.vae.adv_adaptive, c.vae.adv_start_step = VAE_CRITIC_WEIGHT, True, 0
      c.train.init_from = VAE_CRITIC_FROM
    if a.stage == "vae_decoder":
      c.vae.adv_weight, c.vae.freeze_encoder = VAE_DECODER_WEIGHT, True
    c.lock()
  elif a.stage in ("t2v", "t2v_shots", *LAYOUT_STAGES, *_DETAIL_STAGES):
    if any(a[k] != v for k, v in _VAE_LOSS.items()):
      raise ValueError("config arguments 'loss' and 'kl' belong to stage=vae; drop them for "
                       "stage=t2v (its VAE comes from vae_workdir)")
    c = t2v_config.get_config(f"variant=Ti,patch={a.patch},res=64,frames=17,comp={a.comp},"
                              f"zch={a.zch},"
                              f"batch=16,lr={T2V_LR},world={world}"
                              + (f",steps={a.steps}" if a.steps else f",steps={T2V_STEPS}")
                              + local)
    c = c.unlock()
    if not a.runlocal:
      c.vae.channels, c.vae.patch_size, c.vae.channel_mult = 64, 4, _vae_mult(a.comp)
      c.model.depth = 6
      c.model.pos = T2V_POS
      c.text.width, c.text.depth, c.text.heads = 128, 2, 4
      c.text.tokenizer, c.data.text_len = _text_args(a.text)
      c.text.max_len = c.data.text_len
      c.diffusion.base_tokens, c.diffusion.base_shift = T2V_SHIFT_TOKENS, T2V_SHIFT
      # Latents of 2048 clips, encoded once by the frozen VAE (minutes), then reused: on a CPU
      # the encoder would otherwise cost more per step than this DiT.
      c.data.cache_dir = "workdirs/demo/latents"
      c.data.cache_clips = 2048
      c.optim.ema_decay = 0.999
      c.train.ckpt_every = 500
      c.train.sample_every = 1000
      # Held-out adherence (world evaluator, with chance) logged as training goes.
      c.train.eval_every, c.train.eval_num = 2000, 16
      if a.mix or a.stage == "t2v_mix":
        # Native sizes (issue 14): square, 16:9, 9:16, twice the duration and still images,
        # packed into rows of 320 tokens (four rows: the 1280 tokens of 16 square clips), at most
        # four clips a row (caption slots cost cross-attention keys; benchmarks/packing.py).
        c.data.sizes = MIX_STAGE_SIZES if a.stage == "t2v_mix" else MIX
        c.data.pack_tokens, c.data.pack_clips, c.data.batch_size = 320, 4, 4
      if a.tasks:
        # Every Sora mode from one model (issue 15): half the clips text-to-video, the rest with
        # known frames (diffusion/conditioning.py).
        c.diffusion.frame_tasks = FRAME_TASKS
      c.sample.steps = 25
      # 5: on the shipped model, 64 held-out prompts per split, shape is best at 3-5 (0.47 at 5,
      # 0.40 at 8) and direction the same at 3, 5 and 8 (RESULTS.md, issue 13, session 11).
      c.sample.guidance_scale = 5.0
      # 2 for a long video's windows after the first: over 60 s (16 videos) the background's
      # colour moved 0.062 (mean |RGB| / 255) against 0.089 at 5; 1 moved it 0.050 but lost
      # shape. The price on 64 videos: shape slides slowly (trend 0.88) on prompts whose own
      # world clip changes too (RESULTS.md, issue 15, session 25).
      c.sample.extend_guidance_scale = 2.0
      if shots:
        c.train.init_from = SHOTS_FROM
        c.optim.lr, c.optim.warmup_steps = SHOTS_LR, SHOTS_WARMUP
        c.train.eval_every = a.steps
      if layout:
        _layout_stage(c, a.stage, a.steps)
      if fast:
        _fast_stage(c, a.stage, a.steps)
    c.lock()
  else:
    raise ValueError(f"config argument 'stage' must be 'vae', 'vae_critic', 'vae_decoder', "
                     "'vae_refiner', 't2v', "
                     "'t2v_shots', 't2v_readout', 't2v_prior', 't2v_layout', 't2v_mix', "
                     f"'t2v_detail' or 't2v_detail2', got {a.stage!r}")
  return c


def _layout_stage(c, stage: str, steps: int) -> None:
  """The three layout stages: readout and prior trained jointly, the prior fitted alone, then
  everything briefly (see LAYOUT_STAGES); and _DETAIL_STAGES after them."""
  c.model.layout_readout = c.model.layout_prior = True
  c.data.cache_clips = LAYOUT_CACHE_CLIPS
  c.train.eval_every = c.train.sample_every = steps
  if stage == "t2v_readout":
    c.train.init_from = READOUT_FROM
    c.optim.lr, c.optim.warmup_steps = READOUT_LR, READOUT_WARMUP
    return   # its prior is still a blob: it samples from pure noise
  c.sample.layout_prior_strength = LAYOUT_PRIOR_STRENGTH
  if stage == "t2v_prior":
    c.diffusion.layout_prior_only = True
    c.train.init_from = PRIOR_FROM
    c.data.batch_size, c.optim.lr, c.optim.warmup_steps = PRIOR_BATCH, PRIOR_LR, 50
  elif stage == "t2v_layout":
    c.train.init_from = LAYOUT_FROM
    c.optim.lr, c.optim.warmup_steps = LAYOUT_LR, LAYOUT_WARMUP
  else:   # _DETAIL_STAGES: train at shift 1, sample at the shift the stages before trained at
    c.train.init_from = {"t2v_mix": MIX_STAGE_FROM,
                         "t2v_detail2": DETAIL2_FROM}.get(stage, DETAIL_FROM)
    c.optim.lr, c.optim.warmup_steps = DETAIL_LR, LAYOUT_WARMUP
    c.data.cache_clips = DETAIL_CACHE_CLIPS
    c.sample.shift = str(c.diffusion.base_shift)   # at the demo's 80 tokens; a fixed number elsewhere
    c.diffusion.base_shift = DETAIL_SHIFT


def _fast_stage(c, stage: str, steps: int) -> None:
  """recipe=fast (see FAST_STEPS): one shared cache; each stage from the one before it."""
  c.data.cache_clips = FAST_CACHE_CLIPS
  c.train.eval_every = c.train.sample_every = steps
  c.optim.name = FAST_OPTIM.get(stage, c.optim.name)
  if stage == "t2v":
    c.model.layout_readout = c.model.layout_prior = True
  else:
    before = FAST_RECIPE_STAGES[FAST_RECIPE_STAGES.index(stage) - 1]
    c.train.init_from = f"workdirs/demo_fast/{before}"


def _refiner_stage(a, world: str):
  """stage=vae_refiner (see REFINER_STEPS): the vae stage's VAE, its decoder fitted to the last
  DiT stage's latents."""
  c = vae_config.get_config(f"res=64,frames=17,comp={a.comp},zch={a.zch},ch=64,patch=4,batch=4,"
                            f"lr={REFINER_LR},opt=adamw,loss={a.loss},kl={a.kl},steps={a.steps}"
                            + (",runlocal" if a.runlocal else ""))
  c = c.unlock()
  c.data.world = world
  c.data.eval_split = "test"
  c.data.cache_dir = "workdirs/demo/latents"
  if not a.runlocal:
    c.vae.channel_mult = _vae_mult(a.comp)
  c.optim.warmup_steps, c.optim.grad_clip = 10, 0.0
  c.train.log_every, c.train.ckpt_every, c.train.sample_every = 25, 100, a.steps
  c.train.eval_every, c.train.eval_num = a.steps, 16   # held-out PSNR / SSIM at the end
  c.train.init_from = VAE_CRITIC_FROM
  c.vae.freeze_encoder = True
  c.vae.refine_t2v, c.vae.refine_clips = REFINER_FROM, REFINER_CLIPS
  if a.recipe == "fast":
    c.train.init_from = VAE_CRITIC_FROM.replace("workdirs/demo/", "workdirs/demo_fast/")
    c.vae.refine_t2v = f"workdirs/demo_fast/{FAST_RECIPE_STAGES[-1]}"
  return c.lock()

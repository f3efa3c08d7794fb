"""Config parsing and validation: every error names its key and the fix, before compile."""
import json
import pathlib

import ml_collections as mlc
import pytest

from configs import common, demo, dit_paper, t2v, vae
from sora_jax import config as C


def test_parse_arg_types_and_flags():
  a = common.parse_arg("res=64x112,frames=9,runlocal,lr=0.5", res="64", frames=17, lr=1.0,
                       runlocal=False)
  assert (a.res, a.frames, a.lr, a.runlocal) == ("64x112", 9, 0.5, True)
  assert common.parse_res(a.res) == (64, 112)
  assert common.parse_triple("1x2x2", "patch") == (1, 2, 2)


@pytest.mark.parametrize("arg,match", [
    ("nope=1", "'nope' is not known"),
    ("frames=abc", "'frames' expects int"),
])
def test_parse_arg_errors_name_the_argument(arg, match):
  with pytest.raises(ValueError, match=match):
    common.parse_arg(arg, frames=17)


@pytest.mark.parametrize("getter", [
    lambda: vae.get_config(), lambda: vae.get_config("runlocal"),
    lambda: t2v.get_config(), lambda: t2v.get_config("runlocal,res=32,frames=9"),
    lambda: demo.get_config("stage=vae"), lambda: demo.get_config("stage=t2v"),
    lambda: demo.get_config("stage=t2v_shots"), lambda: dit_paper.get_config("variant=XL/2"),
])
def test_shipped_configs_validate(getter):
  C.validate(getter(), num_devices=4)


def test_demo_vae_phases_resume_one_run_and_end_on_l2():
  phases = [demo.get_config("stage=vae," + p) for p in demo.VAE_PHASES]
  for c in phases:
    C.validate(c, num_devices=1)
  steps = [c.train.steps for c in phases]
  assert steps == sorted(steps) and len(set(steps)) == len(steps)
  assert (phases[0].vae.recon_loss, phases[-1].vae.recon_loss) == ("l1", "l2")
  assert phases[-1].vae.kl_weight < phases[0].vae.kl_weight
  # Only the loss changes between phases: the model (and so the checkpoint) is the same.
  assert all(c.vae.channel_mult == phases[0].vae.channel_mult for c in phases)
  with pytest.raises(ValueError, match="belong to stage=vae"):
    demo.get_config("stage=t2v,loss=l2")


def test_demo_vae_critic_stage_fine_tunes_the_vae_stage_on_the_dit_world():
  from sora_jax.train import setup, warm_start
  base, critic = demo.get_config("stage=vae"), demo.get_config("stage=vae_critic")
  C.validate(critic, num_devices=1)
  assert critic.train.init_from == demo.VAE_CRITIC_FROM and critic.data.world == demo.DIT_WORLD
  assert (critic.vae.adv_weight, critic.vae.adv_adaptive, critic.train.steps) == (
      demo.VAE_CRITIC_WEIGHT, True, demo.VAE_CRITIC_STEPS)
  # Only the critic differs from the vae stage's model, so its checkpoints start this stage.
  assert [d for d in setup.architecture_diff(base, critic)
          if not d.startswith(warm_start._TOLERATED)] == []


def test_demo_vae_decoder_stage_is_the_critic_stage_with_the_encoder_frozen():
  critic, dec = demo.get_config("stage=vae_critic"), demo.get_config("stage=vae_decoder")
  C.validate(dec, num_devices=1)
  assert dec.vae.freeze_encoder and not critic.vae.freeze_encoder
  assert (dec.vae.adv_weight, dec.train.steps, dec.train.init_from) == (
      demo.VAE_DECODER_WEIGHT, demo.VAE_DECODER_STEPS, demo.VAE_CRITIC_FROM)


def test_demo_refiner_stage_fits_the_vae_stage_decoder_to_the_detail_stage_dit():
  from sora_jax.train import setup, warm_start
  base, ref = demo.get_config("stage=vae"), demo.get_config("stage=vae_refiner")
  C.validate(ref, num_devices=1)
  assert ref.vae.freeze_encoder and ref.vae.refine_t2v == demo.REFINER_FROM
  assert ref.train.init_from == demo.VAE_CRITIC_FROM and ref.data.world == demo.DIT_WORLD + "_shots"
  assert (ref.train.steps, ref.optim.lr, ref.vae.refine_clips, ref.data.frames) == (
      demo.REFINER_STEPS, demo.REFINER_LR, demo.REFINER_CLIPS,
      demo.get_config("stage=t2v").data.frames)   # the DiT's clips, not the vae stage's 9
  assert [d for d in setup.architecture_diff(base, ref)
          if not d.startswith(warm_start._TOLERATED)] == []


def test_demo_detail_stage_trains_the_layout_stage_at_shift_1_and_samples_at_its_shift():
  layout, detail = demo.get_config("stage=t2v_layout"), demo.get_config("stage=t2v_detail")
  C.validate(detail, num_devices=1)
  assert detail.train.init_from == demo.DETAIL_FROM and detail.diffusion.base_shift == 1.0
  assert float(detail.sample.shift) == layout.diffusion.base_shift == 3.0
  assert detail.model.to_dict() == layout.model.to_dict()
  assert detail.sample.layout_prior_strength == layout.sample.layout_prior_strength


def test_demo_detail2_stage_is_the_detail_stage_again_from_its_weights():
  from sora_jax.train import setup
  detail, again = demo.get_config("stage=t2v_detail"), demo.get_config("stage=t2v_detail2")
  C.validate(again, num_devices=1)
  assert again.train.init_from == demo.DETAIL2_FROM == "workdirs/demo/t2v_detail"
  assert setup.architecture_diff(detail, again) == []
  # Everything else is the detail stage's, its latent cache included (no second encode).
  with again.unlocked():
    again.train.init_from = detail.train.init_from
  assert again.to_dict() == detail.to_dict()


def test_shipped_demo_dit_is_the_recipes_last_stage():
  # The shipped weights must be what `sora-jax demo --train` makes: a recipe edit without a
  # retrain (or the reverse) is caught here, not by a user whose weights differ.
  shipped = pathlib.Path(C.__file__).parent / "assets" / "demo" / "t2v" / "config.json"
  if not shipped.exists():
    pytest.skip(f"{shipped} is not in this checkout")
  cfg = json.loads(shipped.read_text())
  detail = demo.get_config("stage=t2v_detail2")
  assert demo.RECIPE_STAGES[-1] == "t2v_detail2" and detail.train.steps == demo.DETAIL_STEPS
  assert cfg["train"]["steps"] == demo.DETAIL_STEPS
  # Its start is the recipe's detail stage: by its workdir, or (session 42, that workdir gone)
  # by the export of it that shipped before, sora_jax/assets/demo/t2v of session 40.
  assert cfg["train"]["init_from"] in (demo.DETAIL2_FROM, "sora_jax/assets/demo/t2v")
  for section, key in (("optim", "lr"), ("diffusion", "base_shift"), ("data", "cache_clips")):
    assert cfg[section][key] == detail[section][key], (section, key)
  # One-shot clips, as measured against the two-shot world (RESULTS.md, issue 13, session 41).
  assert cfg["data"]["world"] == detail.data.world == demo.DIT_WORLD


def test_demo_mix_stage_is_the_detail_stage_on_packed_rows_of_the_size_mix():
  from sora_jax.train import setup
  detail, mix = demo.get_config("stage=t2v_detail"), demo.get_config("stage=t2v_mix")
  C.validate(mix, num_devices=1)
  assert mix.train.init_from == demo.MIX_STAGE_FROM and mix.train.steps == demo.MIX_STAGE_STEPS
  assert mix.data.sizes == demo.MIX_STAGE_SIZES and mix.data.pack_tokens == 320
  assert C.parse_sizes(mix.data.sizes)[0].weight == 8   # the square size
  for k in ("base_shift", "frame_tasks"):
    assert mix.diffusion[k] == detail.diffusion[k]
  assert (mix.optim.lr, mix.sample.shift) == (detail.optim.lr, detail.sample.shift)
  # same architecture: the detail stage starts from the mix stage's weights as they are
  assert setup.architecture_diff(mix, detail) == []


def test_demo_recipe_stages_each_start_from_the_stage_before():
  """`sora-jax demo --train` runs RECIPE_STAGES in order; run by hand with the README's
  workdirs, each stage's default init_from is the stage before's, and the refiner's DiT is the
  last one."""
  stages = demo.RECIPE_STAGES
  assert stages[0] == "t2v" and stages.index("t2v_mix") < stages.index("t2v_detail")
  for before, stage in zip(stages, stages[1:]):
    assert demo.get_config(f"stage={stage}").train.init_from == f"workdirs/demo/{before}", stage
  assert demo.REFINER_FROM == f"workdirs/demo/{stages[-1]}"


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def test_demo_fast_recipe_is_the_full_recipes_stages_shortened_on_one_cache():
  """recipe=fast (issue 13's 2-hour budget): each stage warm-starts from the one before in
  workdirs/demo_fast, and all of them read one latent cache (one encode)."""
  from sora_jax.train import setup, warm_start
  stages = demo.FAST_RECIPE_STAGES
  cfgs = [demo.get_config(f"stage={s},recipe=fast") for s in stages]
  for stage, c in zip(stages, cfgs):
    C.validate(c, num_devices=1)
    full = demo.get_config(f"stage={stage}")
    assert c.train.steps == demo.FAST_STEPS[stage] < full.train.steps, stage
    assert c.data.cache_clips == demo.FAST_CACHE_CLIPS and c.model.layout_prior, stage
    # Only steps, cache, evaluations and where it starts differ from the full recipe's stage.
    flat, fast = _flat(full.to_dict()), _flat(c.to_dict())
    diff = {k for k in flat if flat[k] != fast[k]}
    assert diff <= {"train.steps", "optim.warmup_steps", "train.init_from", "train.eval_every",
                    "train.sample_every", "data.cache_clips", "model.layout_readout",
                    "model.layout_prior", "optim.name"}, (stage, diff)
    assert c.optim.name == demo.FAST_OPTIM.get(stage, full.optim.name), stage
  assert cfgs[0].train.init_from == "" and cfgs[0].model.layout_readout
  for stage, before, c in zip(stages, cfgs, cfgs[1:]):
    assert c.train.init_from == f"workdirs/demo_fast/{stage}"
    assert [d for d in setup.architecture_diff(before, c)
            if not d.startswith(warm_start._TOLERATED)] == []
  data = {k: v for k, v in cfgs[0].data.items() if k not in ("batch_size",)}
  assert all({k: c.data[k] for k in data} == data for c in cfgs)   # one cache for all of them
  refiner = demo.get_config("stage=vae_refiner,recipe=fast")
  assert refiner.vae.refine_t2v == f"workdirs/demo_fast/{stages[-1]}"
  assert refiner.train.init_from == "workdirs/demo_fast/vae"
  with pytest.raises(ValueError, match="not in recipe=fast"):
    demo.get_config("stage=t2v_shots,recipe=fast")
  with pytest.raises(ValueError, match="recipe='slow'"):
    demo.get_config("stage=t2v,recipe=slow")


def test_demo_shots_stage_fine_tunes_the_t2v_stage_on_two_shot_clips():
  from sora_jax.train import setup, warm_start
  base, shots = demo.get_config("stage=t2v"), demo.get_config("stage=t2v_shots")
  C.validate(shots, num_devices=1)
  assert shots.data.world == demo.DIT_WORLD + "_shots" and shots.train.init_from == demo.SHOTS_FROM
  assert (shots.train.steps, shots.optim.lr, shots.optim.warmup_steps) == (
      demo.SHOTS_STEPS, demo.SHOTS_LR, demo.SHOTS_WARMUP)
  assert shots.diffusion.frame_tasks == base.diffusion.frame_tasks   # every mode is kept
  assert [d for d in setup.architecture_diff(base, shots)
          if not d.startswith(warm_start._TOLERATED)] == []
  with pytest.raises(ValueError, match="'t2v_shots'"):
    demo.get_config("stage=shots")


def test_demo_layout_stages_fit_the_prior_alone_then_fine_tune_everything():
  from sora_jax.train import setup, warm_start
  shots = demo.get_config("stage=t2v_shots")
  readout, prior, layout = (demo.get_config(f"stage={s}") for s in demo.LAYOUT_STAGES)
  for c in (readout, prior, layout):
    C.validate(c, num_devices=1)
    assert c.model.layout_prior and c.model.layout_readout and c.data.world == demo.DIT_WORLD
    assert c.data.cache_clips == demo.LAYOUT_CACHE_CLIPS
    assert c.diffusion.frame_tasks == shots.diffusion.frame_tasks   # every mode is kept
  assert [c.diffusion.layout_prior_only for c in (readout, prior, layout)] == [False, True, False]
  assert [c.sample.layout_prior_strength for c in (readout, prior, layout)] == [
      0.0, demo.LAYOUT_PRIOR_STRENGTH, demo.LAYOUT_PRIOR_STRENGTH]
  assert [c.train.init_from for c in (readout, prior, layout)] == [
      demo.READOUT_FROM, demo.PRIOR_FROM, demo.LAYOUT_FROM]
  assert [c.train.steps for c in (readout, prior, layout)] == [
      demo.READOUT_STEPS, demo.PRIOR_STEPS, demo.LAYOUT_STEPS]
  # the readout and prior are additive: the shots stage's weights start the readout stage, whose
  # weights start the next as they are
  for a, b in ((readout, prior), (prior, layout)):
    assert [d for d in setup.architecture_diff(a, b)
            if not d.startswith(warm_start._TOLERATED)] == []
  added = [d for d in setup.architecture_diff(shots, readout)
           if not d.startswith(warm_start._TOLERATED)]
  assert added and all(d.startswith("model.layout_") for d in added)


def test_demo_stages_learn_their_own_worlds_and_read_whole_captions():
  vae_cfg, t2v_cfg = demo.get_config("stage=vae"), demo.get_config("stage=t2v")
  # The VAE sees everything the world can render; the DiT learns text on one large object.
  assert (vae_cfg.data.world, t2v_cfg.data.world) == ("full", demo.DIT_WORLD)
  assert demo.get_config("stage=t2v,world=full").data.world == "full"
  assert (t2v_cfg.text.tokenizer, t2v_cfg.data.text_len, t2v_cfg.text.max_len) == (
      "words", 96, 96)
  old = demo.get_config("stage=t2v,text=byte:48")
  assert (old.text.tokenizer, old.data.text_len, old.text.max_len) == ("byte", 48, 48)
  with pytest.raises(ValueError, match="text='bpe' is not TOKENIZER:LENGTH"):
    demo.get_config("stage=t2v,text=bpe")


def test_demo_dit_trains_at_shift_3_on_its_own_grid_and_scales_it_for_others():
  from sora_jax.diffusion import objective
  obj = objective.make_objective(demo.get_config("stage=t2v").diffusion)
  assert obj.shift_for(80) == pytest.approx(demo.T2V_SHIFT)        # 17x64x64 at 1x2x2: 80 tokens
  assert obj.shift_for(320) == pytest.approx(2 * demo.T2V_SHIFT)   # 4x the tokens: 2x the shift
  assert demo.get_config("stage=t2v").optim.lr == demo.T2V_LR


def test_vae_loss_argument_is_validated():
  c = vae.get_config("loss=l3")
  with pytest.raises(ValueError, match="vae.recon_loss"):
    C.validate(c, num_devices=1)


def _t2v(**over):
  c = t2v.get_config("runlocal").unlock()
  for dotted, value in over.items():
    section, key = dotted.split(".")
    c[section][key] = value
  return c


@pytest.mark.parametrize("over,key", [
    ({"data.frames": 16}, "data.frames"),
    ({"data.height": 60}, "data.height"),
    ({"data.width": 70}, "data.width"),
    ({"data.batch_size": 3}, "data.batch_size"),
    ({"data.caption": "long"}, "data.caption"),
    ({"vae.temporal_compression": 3}, "vae.temporal_compression"),
    ({"vae.spatial_compression": 32}, "vae.spatial_compression"),
    ({"vae.channel_mult": (1, 2)}, "vae.channel_mult"),
    ({"vae.latent_channels": 0}, "vae.latent_channels"),
    ({"model.patch": (1, 3, 3)}, "model.patch"),
    ({"model.heads": 5, "model.width": 64}, "model.heads"),
    ({"model.attention_impl": "cudnn"}, "model.attention_impl"),
    ({"model.attention_impl": "ring"}, "model.attention_impl"),
    ({"model.mlp": "relu"}, "model.mlp"),
    ({"model.out_conv": "1x2x2"}, "model.out_conv"),
    ({"model.out_conv": "1x3x3", "data.pack_tokens": 320, "data.cache_dir": "/tmp/c"},
     "model.out_conv"),
    ({"diffusion.object_weight": -1.0}, "diffusion.object_weight"),
    ({"diffusion.object_weight": 2.0, "data.pack_tokens": 320, "data.cache_dir": "/tmp/c"},
     "diffusion.object_weight"),
    ({"model.layout_prior": True}, "model.layout_readout"),
    ({"sample.layout_prior_strength": 0.9}, "model.layout_prior"),
    ({"sample.layout_prior_strength": 1.5}, "sample.layout_prior_strength"),
    ({"diffusion.layout_prior_only": True}, "model.layout_prior"),
    ({"diffusion.layout_prior_only": True, "model.layout_readout": True,
      "model.layout_prior": True, "optim.weight_decay": 0.01}, "optim.weight_decay"),
    ({"diffusion.objective": "x0"}, "diffusion.objective"),
    ({"diffusion.shift": "big"}, "diffusion.shift"),
    ({"sample.shift": "auto"}, "sample.shift"),
    ({"sample.sampler": "ddim"}, "sample.sampler"),
    ({"sample.timestep_spacing": "linspace"}, "sample.timestep_spacing"),
    ({"diffusion.max_shift": 0.0}, "diffusion.max_shift"),
    ({"diffusion.base_shift": -1.0}, "diffusion.base_shift"),
    ({"diffusion.beta_schedule": "sigmoid"}, "diffusion.beta_schedule"),
    ({"vae.shortcut_layout": "dcae"}, "vae.shortcut_layout"),
    ({"model.cond": "image"}, "model.cond"),
    ({"text.encoder": "t5"}, "text.t5_path"),
    ({"optim.lr": 0.0}, "optim.lr"),
    ({"optim.warmup_steps": 100}, "optim.warmup_steps"),
    ({"optim.ema_decay": 1.0}, "optim.ema_decay"),
    ({"train.eval_loss_num": -1}, "train.eval_loss_num"),
    ({"mesh.tensor": 3}, "mesh"),
    ({"mesh.data": 0}, "mesh.data"),
])
def test_every_validation_error_names_its_key(over, key):
  with pytest.raises(C.ConfigError, match=key.replace(".", r"\.")):
    C.validate(_t2v(**over), num_devices=4)


def test_unknown_keys_and_sections_are_named():
  c = _t2v()
  c.data.framez = 17
  with pytest.raises(C.ConfigError, match=r"config\.data\.framez is not a known key"):
    C.validate(c, num_devices=4)
  c = _t2v()
  c.trian = mlc.ConfigDict({"steps": 1})
  with pytest.raises(C.ConfigError, match=r"config\.trian is not a known section"):
    C.validate(c, num_devices=4)


def test_frames_error_lists_valid_counts_and_patch_error_explains():
  with pytest.raises(C.ConfigError, match=r"use one of 1, 5, 9, 13, 17"):
    C.validate(_t2v(**{"data.frames": 16}), num_devices=4)
  c = t2v.get_config("res=64x80,patch=1x4x4")
  with pytest.raises(C.ConfigError, match=r"latent width 10 is not a multiple of 4"):
    C.validate(c, num_devices=8)


def test_batch_must_split_over_data_and_processes():
  with pytest.raises(C.ConfigError, match=r"data×fsdp=8"):
    C.validate(_t2v(), num_devices=8)  # runlocal batch 4 on 8 data shards
  with pytest.raises(C.ConfigError, match=r"3 processes"):
    C.validate(_t2v(**{"mesh.data": 1, "mesh.fsdp": 1}), num_devices=1, process_count=3)


def test_optional_shift_cap_accepts_none_or_a_number():
  C.validate(_t2v(**{"diffusion.max_shift": 3.0}), num_devices=4)
  c = _t2v(**{"diffusion.beta_schedule": "scaled_linear", "diffusion.objective": "eps",
              "sample.sampler": "ddim"})
  C.validate(c, num_devices=4)


def test_rules_must_name_a_rules_table():
  c = _t2v()
  c.rules = "ditt"
  with pytest.raises(C.ConfigError, match=r"config\.rules='ditt'"):
    C.validate(c, num_devices=4)


def test_geometry_errors_can_speak_cli_flags():
  flags = {"data.frames": "--frames", "data.height": "--height", "data.width": "--width"}
  with pytest.raises(C.ConfigError, match=r"^--frames=16 is not 1 \+ 4k"):
    C.check_video_geometry(_t2v(**{"data.frames": 16}), flag_names=flags)
  with pytest.raises(C.ConfigError, match=r"^--width=70 is not divisible"):
    C.check_video_geometry(_t2v(**{"data.width": 70}), flag_names=flags)
  c = t2v.get_config("res=64x80,patch=1x4x4")
  with pytest.raises(C.ConfigError, match=r"not a multiple of 4 \(--width=80\)"):
    C.check_video_geometry(c, flag_names=flags)
  # Without flag names the config key is named, as validate() does.
  with pytest.raises(C.ConfigError, match=r"^config\.data\.frames=16"):
    C.check_video_geometry(_t2v(**{"data.frames": 16}))


def test_class_image_is_refused_for_training_only():
  c = dit_paper.get_config("variant=B/4,runlocal")
  C.validate(c, num_devices=4)  # flops needs a valid config
  with pytest.raises(C.ConfigError, match=r"task='class_image' has no trainer.*sora-jax flops"):
    C.validate(c, num_devices=4, training=True)
  C.validate(t2v.get_config("runlocal"), num_devices=4, training=True)
  C.validate(vae.get_config("runlocal"), num_devices=4, training=True)


def test_eval_loss_num_is_refused_where_nothing_reads_it():
  c = vae.get_config("runlocal").unlock()
  c.train.eval_loss_num = 64
  with pytest.raises(C.ConfigError, match=r"train\.eval_loss_num=64 sizes the text-to-video"):
    C.validate(c, num_devices=4)

"""The study runners: sweep expansion, each runner's configs, the DiT paper's table.

A study end to end (train, evaluate, table, plot; a rerun skips the finished runs) is
notebooks/03_ablation.ipynb, which tests/test_notebooks.py executes in quick mode."""
import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import _study  # noqa: E402
from experiments import (aspect_ratio, captions, dit_paper_table, objective,  # noqa: E402
                         optimizer, patch_size, resolution, scaling, shift_study,
                         vae_compression, worlds)


def test_sweeps_expand_to_the_expected_configs():
  pts = _study.product(_study.sweep("patch", ["1x2x2", "2x2x2"]),
                       _study.sweep_many(("model.width", "model.heads"), [(96, 2), (192, 3)]))
  assert pts == [{"patch": "1x2x2", "model.width": 96, "model.heads": 2},
                 {"patch": "1x2x2", "model.width": 192, "model.heads": 3},
                 {"patch": "2x2x2", "model.width": 96, "model.heads": 2},
                 {"patch": "2x2x2", "model.width": 192, "model.heads": 3}]
  assert _study.chain(_study.sweep("a", [1]), _study.sweep("b", [2])) == [{"a": 1}, {"b": 2}]
  assert len({_study.point_name(p) for p in pts}) == 4   # one workdir per run
  c = _study.config_for(pts[3], steps=300, eval_num=4, eval_points=3)
  assert tuple(c.model.patch) == (2, 2, 2) and (c.model.width, c.model.heads) == (192, 3)
  assert (c.train.steps, c.train.eval_every, c.train.eval_num) == (300, 100, 4)
  with pytest.raises(KeyError, match="model.widht"):
    _study.config_for({"model.widht": 3}, steps=10, eval_num=1)


@pytest.mark.parametrize("module,expected", [
    (patch_size.points(["1x1x1", "2x4x4"], 13), [(1, 1, 1), (2, 4, 4)]),
    (objective.points(["flow", "eps", "v"]), ["euler", "ddim", "ddim"]),
    (resolution.points(["32x32", "64x112"]), [(32, 32), (64, 112)]),
    (scaling.points([96, 384]), [(96, 2), (384, 6)]),
])
def test_each_runner_sweeps_its_axis(module, expected):
  cfgs = [_study.config_for(p, steps=10, eval_num=1) for p in module]
  got = [tuple(c.model.patch) if "patch" in p else c.sample.sampler if "sample.sampler" in p
         else (c.data.height, c.data.width) if "data.height" in p
         else (c.model.width, c.model.heads) for c, p in zip(cfgs, module)]
  assert got == expected
  if "diffusion.objective" in module[0]:
    assert [c.diffusion.objective for c in cfgs] == ["flow", "eps", "v"]
  if "model.width" in module[0]:   # scaling: the model grows, and so do its FLOPs
    facts = [_study.model_facts(c) for c in cfgs]
    assert facts[1]["params"] > 10 * facts[0]["params"] and facts[1]["gmacs"] > facts[0]["gmacs"]


def test_vae_compression_and_caption_runners():
  pts = _study.sweep("comp", vae_compression.COMPS.split(","))
  cfgs = [_study.config_for(p, steps=10, eval_num=1) for p in pts]
  comps = [(c.vae.temporal_compression, c.vae.spatial_compression) for c in cfgs]
  assert comps == [(1, 8), (4, 8), (4, 16)]
  assert [_study.model_facts(c)["tokens"] for c in cfgs] == [272, 80, 20]
  # Each point's VAE is trained with the layout its DiT expects.
  for p, c in zip(pts, cfgs):
    v = vae_compression.vae_config(p["comp"], 10, smoke=False).vae
    assert (v.temporal_compression, v.spatial_compression, tuple(v.channel_mult)) == (
        c.vae.temporal_compression, c.vae.spatial_compression, tuple(c.vae.channel_mult))
  cap = [_study.config_for(p, steps=10, eval_num=1)
         for p in captions.points(["byte:48", "words:96"], ["short", "mixed"])]
  assert [(c.text.tokenizer, c.data.text_len, c.text.max_len, c.data.caption) for c in cap] == [
      ("byte", 48, 48, "short"), ("byte", 48, 48, "mixed"), ("words", 96, 96, "short"),
      ("words", 96, 96, "mixed")]
  with pytest.raises(ValueError, match="TOKENIZER:LENGTH"):
    captions.points(["bpe:10"], ["mixed"])
  # Aspect ratio: both runs read the same 16:9 renders, one whole and one centre-cropped.
  ar = [_study.config_for(p, steps=10, eval_num=1) for p in aspect_ratio.points((64, 112))]
  assert [(c.data.builder_config, c.data.height, c.data.width) for c in ar] == [
      ("17x64x112", 64, 112), ("17x64x112", 64, 64)]
  assert [_study.model_facts(c)["tokens"] for c in ar] == [140, 80]


def test_worlds_and_shift_runners_change_one_key_each():
  shifts = [_study.config_for(p, steps=10, eval_num=1) for p in shift_study.points(["auto", "3.0"])]
  assert [c.diffusion.shift for c in shifts] == ["auto", "3.0"]
  assert all(c.sample.shift == "train" for c in shifts)   # sampling follows the trained shift
  cfgs = [_study.config_for(p, steps=10, eval_num=1) for p in worlds.points(["full", "large"])]
  assert [c.data.world for c in cfgs] == ["full", "large"]
  assert all((c.text.tokenizer, c.data.text_len) == ("words", 96) for c in cfgs)
  assert cfgs[0].model.to_dict() == cfgs[1].model.to_dict()
  with pytest.raises(ValueError, match="--worlds huge unknown"):
    worlds.points(["huge"])


def test_optimizer_runner_changes_only_the_optimizer():
  pts = optimizer.points(["adamw:1e-3", "muon:3e-4"], muon_lr=0.05)
  adamw, muon = (_study.config_for(p, steps=10, eval_num=1) for p in pts)
  assert (adamw.optim.name, adamw.optim.lr) == ("adamw", 1e-3)
  assert (muon.optim.name, muon.optim.lr, muon.optim.muon_lr) == ("muon", 3e-4, 0.05)
  assert adamw.model.to_dict() == muon.model.to_dict()
  for bad in ("sgd:1e-3", "adamw:fast", "muon:0"):
    with pytest.raises(ValueError, match="is not NAME:LR"):
      optimizer.points([bad])


def test_dit_paper_table_matches_the_paper(tmp_path):
  assert dit_paper_table.main(["--out", str(tmp_path)]) == 0
  rows = json.load(open(tmp_path / "table.json"))
  assert len(rows) == 12
  xl2 = next(r for r in rows if r["model"] == "DiT-XL/2")
  assert xl2["params_ref"] == 675_129_632 and abs(xl2["gmacs"] - 118.64) < 0.05
  assert all(abs(r["gmacs_diff_pct"]) < 1 and abs(r["params_diff_pct"]) < 1 for r in rows)


def test_study_hooks_add_their_values_to_every_row(tmp_path, monkeypatch):
  """prepare (before a point trains) and after (once it has) add columns to the point's rows."""
  import argparse
  calls = []

  def fake_run_point(study, point, config, workdir, extra):
    calls.append(("train", point["model.depth"]))
    return [{"run": _study.point_name(point), **point, **extra, "step": s, "flow_loss": 1.0 / s}
            for s in (5, 10)]

  monkeypatch.setattr(_study, "run_point", fake_run_point)
  a = argparse.Namespace(steps=10, eval_num=1, base="", vae_workdir="", smoke=False, full=False,
                         set=[], cache_clips=8, workdir=str(tmp_path / "w"), list=False,
                         dry_run=False, out=str(tmp_path / "out"))
  rows = _study.run_study(
      "hooks", _study.sweep("model.depth", [2, 3]), a, x="step", series="model.depth",
      title="t", prepare=lambda p, c: calls.append(("prepare", p["model.depth"])) or {
          "vae_psnr": 20.0 + p["model.depth"]},
      after=lambda p, c, wd: calls.append(("after", p["model.depth"])) or {
          "wide_framing": wd.endswith(_study.point_name(p))})
  assert calls == [("prepare", 2), ("train", 2), ("after", 2),
                   ("prepare", 3), ("train", 3), ("after", 3)]
  assert [(r["vae_psnr"], r["wide_framing"]) for r in rows] == [(22.0, True)] * 2 + [
      (23.0, True)] * 2
  assert "vae_psnr" in open(tmp_path / "out" / "table.md").read()


def test_vae_recon_scores_the_shipped_vae_on_a_world(tmp_path, monkeypatch):
  from experiments import vae_recon
  shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "sora_jax", "assets", "demo", "vae")
  monkeypatch.setattr(sys, "argv", ["vae_recon.py", f"--workdir={shipped}", "--frames=5",
                                    "--num=2", "--world=large", f"--out={tmp_path}"])
  vae_recon.main()
  m = json.load(open(tmp_path / "metrics.json"))
  assert m["procedural"]["psnr"] > 15 and m["adherence_ceiling"]["world"] == "large"
  assert m["adherence_ceiling"]["as_rendered"]["color"] == 1.0
  assert os.path.getsize(tmp_path / "recon.png") > 1000


def test_direction_probe_and_multishot_tables(t2v_tiny):
  """The probes run on any model (here the tiny one) and print one row per prompt / run."""
  from experiments import direction_probe, multishot
  from sora_jax.eval import shots
  rows = direction_probe.probe(t2v_tiny, "red square", seeds=2)
  assert [r["prompt"].split(" ", 3)[3] for r in rows] == [p for p, _ in direction_probe.PHRASES]
  assert all(0 <= r["direction"] <= 1 for r in rows)
  md = direction_probe.table_md({"tiny": rows})
  assert md.count("| tiny |") == len(direction_probe.PHRASES)
  places = direction_probe.placement(t2v_tiny, "red square", seeds=2)
  assert [r["place"] for r in places] == list(direction_probe.PLACES)
  spread = direction_probe.t1_spread(t2v_tiny, seeds=2, ts=(1.0,))
  # the tiny model's guess moves with its noise: seed variance is measured, not zero
  assert spread[0]["seed_var"] > 0 and spread[0]["prompt_var"] >= 0
  layout = direction_probe.layout_md({"tiny": places}, {"tiny": spread})
  assert layout.count("| tiny |") == 2
  seps = direction_probe.text_separation(t2v_tiny, "red square")
  assert [r["swap"] for r in seps] == ["left/right", "red/blue"]
  # a swapped word changes its own feature, unless the tiny model's short captions cut it
  assert not seps[1]["cut"] and seps[1]["at_word"] > 0
  assert seps[0]["cut"] or seps[0]["at_word"] > 0
  assert direction_probe.separation_md({"tiny": seps}).count("| tiny |") == 2
  fake = {"world": "large_shots", "num_videos": 2, "cuts_unasked": 0.5,
          "shots": dict.fromkeys(shots.KEYS, 0.25), "chance": dict.fromkeys(shots.KEYS, 0.0),
          "adherence_one_shot": {"color": 1.0, "shape": 0.5}}
  assert "| tiny | large_shots | 0.25 (0.00)" in multishot.table_md({"tiny": fake})


@pytest.mark.parametrize("runner", [objective, scaling, patch_size, resolution, shift_study])
def test_every_run_of_a_study_validates_before_it_trains(runner, capsys):
  # --list validates each point's config as a real run does first: eps and v used to meet the
  # recipe's frame tasks (rectified flow only) and stop the objective study before it began.
  assert runner.main(["--list", "--steps", "10"]) == 0
  assert len(capsys.readouterr().out.strip().splitlines()) >= 2


@pytest.mark.parametrize("runner,args,run", [
    # DDPM-eps and its DDIM sampler, not flow's
    (objective, ["--objectives", "eps"], "diffusion.objective=eps,sample.sampler=ddim"),
    # pt = 2 over 13 frames' 4 latent frames
    (patch_size, ["--patches", "2x2x2"], "patch=2x2x2,data.frames=13"),
    # a non-square size the world renders natively
    (resolution, ["--sizes", "48x32"], "data.height=48,data.width=32"),
    # trains the point's own VAE first, then the DiT on its latents
    (vae_compression, ["--comps", "4x8x8", "--vae_steps", "2"], "comp=4x8x8"),
], ids=["objective", "patch_size", "resolution", "vae_compression"])
def test_a_runner_trains_evaluates_and_tabulates_at_its_smallest_setting(runner, args, run,
                                                                         tmp_path):
  # scaling runs end to end in notebooks/03_ablation; these are the other runners' axes.
  out = tmp_path / "out"
  assert runner.main(["--smoke", "--steps", "2", "--eval_num", "2", *args,
                      "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
  rows = json.load(open(out / "table.json"))
  assert [(r["run"], r["step"]) for r in rows] == [(run, 2)] and rows[0]["flow_loss"] > 0
  assert all(0 <= rows[0][k] <= 1 for k in ("color", "shape", "direction", "permanence"))
  assert os.path.getsize(out / "plot.png") > 1000 and f"| {run} |" in open(out / "table.md").read()


def test_aspect_ratio_runner_scores_both_runs_at_the_wide_size(tmp_path):
  out = tmp_path / "out"
  assert aspect_ratio.main(["--smoke", "--steps", "2", "--eval_num", "1", "--wide", "32x48",
                            "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
  rows = json.load(open(out / "table.json"))
  assert [(r["data.height"], r["data.width"]) for r in rows] == [(32, 48), (32, 32)]
  assert all(0 <= r["wide_framing"] <= 1 and "wide_color_chance" in r for r in rows)
  md = open(out / "table.md").read()
  assert "| native |" in md and "| square crop |" in md and "| held-out clips (reference) |" in md


def test_a_study_dry_run_compiles_each_run_and_reports_memory(tmp_path, capsys):
  rc = scaling.main(["--smoke", "--dry_run", "--steps", "2", "--sizes", "64,128",
                     "--workdir", str(tmp_path)])
  lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
  assert [r["run"] for r in lines] == ["model.width=64,model.heads=2",
                                       "model.width=128,model.heads=2"]
  assert lines[1]["params"] > lines[0]["params"] and all(
      r["peak_bytes_estimate"] > 0 for r in lines)
  assert rc == 0 and not (tmp_path / "scaling" / "model.width=64,model.heads=2").exists()


def test_prior_placement_decodes_the_layout_prior_per_place_word():
  import jax
  import numpy as np

  from configs import t2v as t2v_config
  from experiments import direction_probe
  from sora_jax import runs
  from sora_jax.pipeline import TextToVideo
  config = t2v_config.get_config("runlocal,res=32,frames=9").unlock()
  config.diffusion.latent_scale = 0.9
  config.model.layout_readout = config.model.layout_prior = True
  config.text.max_len = config.data.text_len = 256   # the byte tokenizer reaches the place word
  system = runs.t2v_system(config)
  params = runs.unbox(jax.jit(system.init)(jax.random.key(0), system.example_batch()))
  params = jax.tree.map(lambda p: p + 0.05 * np.random.default_rng(0).standard_normal(p.shape)
                        .astype(p.dtype), params)
  rows = direction_probe.prior_placement(TextToVideo(system, params, on_long="warn"),
                                         "red square")
  assert [r["place"] for r in rows] == list(direction_probe.PLACES)
  xs = [r["x"] for r in rows]
  assert all(0 < r["x"] < 1 and 0 < r["y"] < 1 for r in rows)
  assert max(xs) - min(xs) > 1e-4   # the prior reads the caption, so the place word moves it


def test_layout_prior_fit_trains_the_prior_and_leaves_the_blocks(tmp_path):
  import jax
  import numpy as np

  from configs import t2v as t2v_config
  from experiments import layout_prior_fit
  from sora_jax import runs
  config = t2v_config.get_config("runlocal,res=32,frames=9").unlock()
  config.diffusion.latent_scale = 0.9
  config.model.layout_readout = config.model.layout_prior = True
  system = runs.t2v_system(config)
  r = np.random.default_rng(0)
  batch = {k: (r.standard_normal(s.shape).astype(np.float32) if k == "latents" else
               np.ones(s.shape, bool) if k == "text_mask" else
               r.integers(1, 100, s.shape).astype(np.int32))
           for k, s in system.example_batch(4).items()}
  params = runs.unbox(jax.jit(system.init)(jax.random.key(0), batch))
  seen = []
  new, losses = layout_prior_fit.fit_prior(system, params, iter([batch] * 6), 6, 1e-2, every=3,
                                           on_every=lambda s, p, l: seen.append((s, l)))
  assert [s for s, _ in seen] == [3, 6] and losses[-1] < losses[0]
  moved = lambda path: float(np.abs(np.asarray(new["dit"][path]["kernel"])  # noqa: E731
                                    - np.asarray(params["dit"][path]["kernel"])).max())
  assert moved("layout_prior") > 0 and moved("patch_embed") == 0
  layout_prior_fit.save_export(system, new, str(tmp_path / "fit"))
  _, back = runs.open_t2v(str(tmp_path / "fit"))
  np.testing.assert_array_equal(np.asarray(back["dit"]["layout_prior"]["kernel"]),
                                np.asarray(new["dit"]["layout_prior"]["kernel"]))


def test_sampler_sweep_runs_each_setting_on_the_same_prompts(tmp_path):
  """The shipped model at its own sampling shift and at 1: one row per setting, the override
  reaching the sampler (resolved shift), and the table one line per row."""
  from experiments import sampler_sweep
  from sora_jax import demo
  rows = sampler_sweep.sweep(os.path.join(demo.ASSETS, "t2v"), num=2, split="test", steps=[2],
                             guidance=[3.0], prior_strength=[None], shift=[None, "1"])
  assert [(r["shift"], r["guidance"]) for r in rows] == [("run's", 3.0), ("1", 3.0)]
  assert rows[0]["resolved_shift"] != 1.0 and rows[1]["resolved_shift"] == 1.0
  assert all(set(r["adherence"]) >= {"color", "direction", "shape"} for r in rows)
  assert rows[0]["layout_prior_strength"] == rows[1]["layout_prior_strength"] > 0
  md = sampler_sweep.table(rows)
  assert md.count("\n") == 2 + len(rows) and "| 2 | 3 | 1 (1.0) |" in md


def test_shape_by_noise_scores_reconstructions_then_each_strength(t2v_tiny):
  from experiments import shape_by_noise
  rows = shape_by_noise.study(t2v_tiny, num=2, strengths=[0.5, 1.0], num_steps=2)
  assert [r["from"] for r in rows] == ["ground truth", "reconstruction", "t = 0.5", "t = 1"]
  assert all(sum(n for _, n in r["shape_by_shape"].values()) == 2 for r in rows)
  assert all(0 <= r["adherence"]["shape"] <= 1 for r in rows)
  # the world's own clips show their object in every frame, read as the prompted shape mostly
  truth = rows[0]["read_as"]
  assert sum(sum(r.values()) for r in truth.values()) == 2 * 9   # two 9-frame clips
  assert sum(r.get(s, 0) for s, r in truth.items()) > 0.8 * 2 * 9
  md = shape_by_noise.table(rows)
  assert md.count("\n") == 2 * (2 + len(rows)) + 3 and "| t = 0.5 |" in md


def test_shape_guidance_steers_from_the_caption_with_its_shape_swapped(t2v_tiny):
  from experiments import shape_guidance
  assert shape_guidance.negative_caption("a red ball falls", "swap") == "a red square falls"
  assert shape_guidance.negative_caption("a big star spins", "drop") == "a big spins"
  caps = ["a red circle falls", "a blue star spins"]
  null, swap = (shape_guidance.sample(t2v_tiny, caps, kind, seed=0, batch=2)
                for kind in ("null", "swap"))
  assert len(null) == len(swap) == 2 and null[0].dtype == np.uint8
  plain = t2v_tiny(caps, seed=0)[0]   # the plain sampler, up to rounding to uint8
  assert np.abs(null[0].astype(int) - plain).max() <= 1
  assert np.abs(null[0].astype(int) - swap[0]).max() > 0


def test_refiner_decoder_runs_the_recipe_stage_on_the_vae_its_dit_was_trained_on():
  from experiments import refiner_decoder
  from sora_jax import config as config_lib
  from sora_jax import runs
  t2v = os.path.join(REPO, "sora_jax", "assets", "demo", "t2v")
  c = refiner_decoder.stage_config(t2v, clips=64, steps=20, strengths="0.5", adv_weight=0.25)
  config_lib.validate(c)
  vae = os.path.join(REPO, "sora_jax", "assets", "demo", "vae")
  assert os.path.samefile(c.train.init_from, vae) and c.vae.refine_t2v == t2v
  assert c.vae.shortcut_layout == runs.load_config(vae).vae.shortcut_layout == "subpixel"
  assert c.vae.freeze_encoder and c.vae.refine_strengths == (0.5,) and c.train.steps == 20
  assert c.vae.adv_weight == 0.25 and c.vae.adv_adaptive and c.data.frames == 17


def test_word_gains_reports_each_group_of_the_held_out_clips(t2v_tiny):
  from experiments import word_gains
  names, tokens, losses = word_gains.losses_on(t2v_tiny.system, t2v_tiny.params,
                                               t2v_tiny.config, num=4, chunk=3)
  assert names[:2] == ["true", "null"] and losses.shape[::2] == (len(names), 4)
  groups = word_gains.group_reports(names, tokens, losses, group=2)
  assert len(groups) == 2 and all(np.isfinite(g["flow_loss"]) for g in groups)
  # the groups split the clips: their mean flow loss is the whole report's
  from sora_jax.eval import counterfactual as cf
  whole = cf.loss_report(names, tokens, losses)
  assert np.isclose(np.mean([g["flow_loss"] for g in groups]), whole["flow_loss"])

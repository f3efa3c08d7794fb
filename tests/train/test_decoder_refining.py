"""vae.refine_t2v: a decoder trained through the loop on a DiT's own latents — the pairs are
the DiT's (not the encoder's), cached and reused, only the decoder learns, and a DiT trained on
another encoder is refused."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import vae as vae_config
from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.train import loop
from sora_jax.train.decoder_refining import DecoderRefining


def _arrays(tree):
  return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope="module")
def tiny_runs(t2v_tiny, tmp_path_factory):
  """(vae export, t2v export bound to it): the tiny TextToVideo as two run directories."""
  root = tmp_path_factory.mktemp("refine")
  vae_dir, t2v_dir = str(root / "vae"), str(root / "t2v")
  vcfg = vae_config.get_config("runlocal,res=32,frames=9").unlock()
  vcfg.vae = t2v_tiny.config.vae.copy_and_resolve_references()
  runs.save_config(vcfg.lock(), vae_dir)
  runs.write_export_params(vae_dir, {"vae": _arrays(t2v_tiny.system.vae_params)})
  tcfg = t2v_tiny.config.copy_and_resolve_references().unlock()
  tcfg.vae_workdir = vae_dir
  runs.save_config(tcfg.lock(), t2v_dir)
  runs.write_export_params(t2v_dir, _arrays(t2v_tiny.params))
  return vae_dir, t2v_dir, str(root / "cache")


def _config(vae_dir, t2v_dir, cache, **over):
  c = vae_config.get_config("runlocal,res=32,frames=9,steps=2,batch=8").unlock()
  c.vae = runs.load_config(vae_dir).vae.copy_and_resolve_references()
  c.train.init_from, c.data.cache_dir, c.data.batch_size = vae_dir, cache, 8
  c.vae.freeze_encoder, c.vae.refine_t2v = True, t2v_dir
  c.vae.refine_clips, c.vae.refine_strengths = 8, (0.5, 0.8)
  c.optim.warmup_steps, c.optim.lr, c.optim.ema_decay = 0, 1e-3, 0.0
  c.train.log_every, c.train.sample_every, c.train.eval_every = 1, 0, 0
  for k, v in over.items():
    section, key = k.split(".")
    c[section][key] = v
  return c.lock()


def test_the_decoder_learns_the_dits_latents_and_the_encoder_stays(tiny_runs, tmp_path):
  vae_dir, t2v_dir, cache = tiny_runs
  config = _config(vae_dir, t2v_dir, cache)
  recipe = DecoderRefining(config)
  assert recipe.generated_rows(8) == 4 and recipe.generated_rows(1) == 1
  loop.train(config, str(tmp_path / "run"))
  pairs = np.load(recipe.pairs_path())
  assert pairs["latents"].shape[0] == 8 and pairs["video"].shape[1:] == (9, 32, 32, 3)
  np.testing.assert_allclose(pairs["strength"], [0.5, 0.8] * 4)
  # The DiT's latents of the clips, not the encoder's.
  t2v_vae = runs.open_vae(vae_dir)[1]
  enc = np.asarray(recipe.system.encode(t2v_vae, pairs["video"][:2].astype(np.float32)
                                        / 127.5 - 1))
  assert np.abs(pairs["latents"][:2] - enc).mean() > 0.05 * np.abs(enc).mean()
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert all("recon_generated" in r and np.isfinite(r["recon_generated"]) for r in rows)
  _, new = runs.open_vae(str(tmp_path / "run"), use_ema=False)
  same = jax.tree.leaves(jax.tree.map(np.array_equal, _arrays(new["encoder"]),
                                      _arrays(t2v_vae["encoder"])))
  assert same and all(same)
  moved = jax.tree.leaves(jax.tree.map(np.array_equal, _arrays(new["decoder"]),
                                       _arrays(t2v_vae["decoder"])))
  assert not all(moved)
  # A second run over the same DiT and settings reads the same pairs file (no sampling).
  mtime = os.path.getmtime(recipe.pairs_path())
  assert DecoderRefining(config).pairs_path() == recipe.pairs_path()
  next(DecoderRefining(config).make_iterator(seed=0))
  assert os.path.getmtime(recipe.pairs_path()) == mtime


def test_a_new_decoder_under_the_same_dit_keeps_its_pairs(tiny_runs, tmp_path):
  """The pairs depend on the DiT and the encoder only: shipping a refined decoder under the
  same DiT (its vae_workdir rewritten) must not make the next run sample them again."""
  vae_dir, t2v_dir, cache = tiny_runs
  vae2, t2v2 = str(tmp_path / "vae"), str(tmp_path / "t2v")
  params = runs.open_vae(vae_dir)[1]
  runs.save_config(runs.load_config(vae_dir), vae2)
  runs.write_export_params(vae2, {"vae": _arrays(params)})
  shutil.copytree(t2v_dir, t2v2)
  tcfg = runs.load_config(t2v_dir).unlock()
  tcfg.vae_workdir = vae2
  runs.save_config(tcfg.lock(), t2v2)
  before = DecoderRefining(_config(vae2, t2v2, cache)).pairs_path()
  params = {**params, "decoder": jax.tree.map(lambda a: np.asarray(a) + 1.0, params["decoder"])}
  runs.write_export_params(vae2, {"vae": _arrays(params)})
  assert DecoderRefining(_config(vae2, t2v2, cache)).pairs_path() == before


def test_a_dit_of_another_encoder_is_refused(tiny_runs, tmp_path):
  vae_dir, t2v_dir, cache = tiny_runs
  other = str(tmp_path / "other_vae")
  params = runs.open_vae(vae_dir)[1]
  params = {**params, "encoder": jax.tree.map(lambda a: np.asarray(a) + 1.0, params["encoder"])}
  runs.save_config(runs.load_config(vae_dir), other)
  runs.write_export_params(other, {"vae": _arrays(params)})
  with pytest.raises(config_lib.ConfigError, match="train.init_from"):
    DecoderRefining(_config(other, t2v_dir, cache)).pairs_path()


@pytest.mark.parametrize("over,match", [
    ({"vae.freeze_encoder": False}, "freeze_encoder=True"),
    ({"vae.refine_share": 0.0}, "refine_share"),
    ({"vae.refine_strengths": (0.5, 1.5)}, "refine_strengths"),
    ({"vae.refine_clips": 4}, "refine_clips"),
    ({"data.cache_dir": ""}, "cache_dir"),
])
def test_bad_refining_settings_name_the_key(tiny_runs, over, match):
  config = _config(*tiny_runs, **over)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)

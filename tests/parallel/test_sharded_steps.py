"""Sharded == one device, on 8 fake CPU devices.

The DiT (t2v) train step on four (data, fsdp, tensor, context) meshes, the VAE's on two and a
packed, frame-conditioned DiT step on one give the loss and parameters of a one-device run;
sampling on 8 devices gives the one-device video; the parameter shardings of a tiny t2v config
match a golden file; the compiled step never retraces.
"""
import math
import os
import pathlib

import chex
import jax
import numpy as np
import pytest

from configs import t2v as t2v_config
from configs import vae as vae_config
from configs.common import mesh_config
from sora_jax import pipeline as t2v_pipeline
from sora_jax.data import pipeline
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib
from sora_jax.train import inspect as shard_inspect
from sora_jax.train import loop
from sora_jax.train import state as state_lib
from sora_jax.train import setup as setup_lib
from sora_jax.train import steps as steps_lib

MESHES = {"d8": (8, 1, 1, 1), "d2f2t2": (2, 2, 2, 1), "f2t2c2": (1, 2, 2, 2)}
STEPS = 3  # step 0 has lr 0 (warmup), so two real updates
GOLDEN = pathlib.Path(__file__).parent / "golden" / "t2v_runlocal_mesh2221.txt"
REGENERATE = ("regenerate it with: UPDATE_GOLDEN=1 python -m pytest "
              "tests/parallel/test_sharded_steps.py -k golden  (then review the diff)")


def _mesh(shape):
  return mesh_lib.make_mesh(mesh_config(*shape), devices=jax.devices()[:math.prod(shape)])


class _Run:
  """A recipe, its optimizer and one fixed global batch (host numpy), shared by every mesh."""

  def __init__(self, config, host_batch_fn, recipe=None):
    self.config, self.recipe = (config, recipe) if recipe else setup_lib.recipe_for(config)
    self.rules = rules_lib.rules_for(config.rules)
    self.batch = host_batch_fn(self)
    self.tx, _ = loop.make_optimizer(self.recipe, self.config, self.batch)
    self.results = {}

  def context(self, mesh):
    return mesh_lib.mesh_and_rules(mesh, self.rules)

  def train(self, shape, init_params=None):
    """{losses, grad_norms, init, params (numpy), specs} after STEPS steps on `shape`."""
    mesh = _mesh(shape)
    with self.context(mesh):
      batch = pipeline.to_global(self.batch, mesh)
      built = loop.build_step(self.recipe, self.config, mesh, batch)
      if init_params is None:
        state = built.init(jax.random.key(self.config.seed), batch)
        init_params = jax.device_get(state.params)
      else:  # the sharded init is compiled once per mesh in train; here lay out given values
        copy = lambda t: jax.tree.map(np.array, t)  # noqa: E731 - distinct buffers to donate
        host = state_lib.TrainState(step=np.zeros((), np.int32), params=copy(init_params),
                                    opt_state=copy(self.tx.init(init_params)),
                                    ema_params=copy(init_params))
        state = jax.device_put(host, built.state_shardings)
      losses, gnorms = [], []
      for step in range(STEPS):
        state, metrics = built.step_fn(state, batch, steps_lib.step_rng(self.config.seed, step))
        losses.append(float(metrics["loss"]))
        gnorms.append(float(metrics["grad_norm"]))
      # Parameters really are laid out as the rules say (not silently replicated).
      specs = {str(s.spec) for s in jax.tree.leaves(built.state_shardings.params)}
      return dict(losses=losses, grad_norms=gnorms, init=init_params,
                  params=jax.device_get(state.params), specs=specs)


def _sharding_test_config(config):
  with config.unlocked():
    config.data.batch_size = 8
    # Adam's update is ~lr * sign(g) wherever g is only float noise (zero-initialised adaLN
    # gates), so rounding differences between meshes would flip whole updates. A larger eps
    # keeps updates proportional to the gradient there; elsewhere it is still Adam.
    config.optim.eps = 1e-3
  return config


def _t2v_batch(run):
  # Latents from the frozen VAE once, on one device; every mesh then sees the same numbers.
  host = next(pipeline.make_iterator(run.config.data, "train", seed=0))
  mesh = _mesh((1, 1, 1, 1))
  with run.context(mesh):
    dev = run.recipe.prepare(host, mesh)
  return {k: np.asarray(v) for k, v in dev.items()}


def _vae_batch(run):
  host = next(pipeline.make_iterator(run.config.data, "train", seed=0))
  return {"video": np.asarray(host["video"], np.float32)}


@pytest.fixture(scope="module")
def t2v_run():
  return _Run(_sharding_test_config(t2v_config.get_config("runlocal,res=32,frames=9")),
              _t2v_batch)


@pytest.fixture(scope="module")
def vae_run():
  # 2x4x4: one level fewer in time and space than the default, the same layer kinds and rules;
  # the test takes 87 s instead of 112 alone on the 2-core box (two train-step compiles).
  config = vae_config.get_config("runlocal,res=16,frames=5,comp=2x4x4")
  return _Run(_sharding_test_config(config), _vae_batch)


def _reference(run, **kw):
  if "ref" not in run.results:
    run.results["ref"] = run.train((1, 1, 1, 1), **kw)
  return run.results["ref"]


def _assert_same(ref, got, name):
  np.testing.assert_allclose(got["losses"], ref["losses"], rtol=2e-5, atol=1e-6,
                             err_msg=f"{name}: loss")
  np.testing.assert_allclose(got["grad_norms"], ref["grad_norms"], rtol=2e-4, atol=1e-6,
                             err_msg=f"{name}: grad norm")
  # atol: adaLN-zero gates sit at ~1e-6, where reassociation alone moves Adam by that much.
  chex.assert_trees_all_close(got["params"], ref["params"], rtol=1e-4, atol=5e-6)
  # The steps moved the params: equality is not two copies of the init.
  assert ref["losses"][0] != ref["losses"][1]
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(ref["params"]),
                                                  jax.tree.leaves(ref["init"]))]
  assert sum(moved) >= 3  # (adaLN-zero gates keep most weights still for a few steps)


# No fsdp-only mesh (d2f4 was one): d2f2t2 and f2t2c2 shard over fsdp too, and each mesh costs
# ~25 s of the suite's compile time.
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_dit_step_sharded_equals_one_device(t2v_run, mesh_name):
  ref = _reference(t2v_run)
  got = t2v_run.train(MESHES[mesh_name], init_params=ref["init"])
  _assert_same(ref, got, mesh_name)
  if mesh_name in ("d2f2t2", "f2t2c2"):  # fsdp and tensor both split some weight
    specs = " ".join(got["specs"])
    assert "fsdp" in specs and "tensor" in specs, got["specs"]


def _packed_config():
  config = _sharding_test_config(t2v_config.get_config("runlocal,res=32,frames=9"))
  with config.unlocked():
    config.data.sizes, config.data.pack_tokens = "9x32x32,9x32x64,9x64x32,1x32x32", 32
    config.data.cache_dir = "unused"        # the batch below is packed from stand-in latents
    config.model.attention_impl = "ring"    # segments ride the ring on the context mesh
    # frame conditioning of packed clips: per-(clip, frame) t and known tokens, sharded too
    config.diffusion.frame_tasks = "none:0.3,first:0.3,retake:0.2,forcing:0.2"
  return config


def _packed_batch(run):
  """8 packed rows of clips of four sizes (latents drawn at random, real captions)."""
  from sora_jax.data import packing
  from sora_jax.models import patching
  system, r = run.recipe.system, np.random.RandomState(0)
  sizes = packing.parse_sizes(run.config.data.sizes)
  tokens, mask = system.encode_prompts([f"a red circle moves {i}" for i in range(len(sizes))])
  clips = [{"latents": r.randn(*system.vae.latent_shape(*s.shape)).astype(np.float32),
            "tokens": tokens[i % len(sizes)], "text_mask": mask[i % len(sizes)]}
           for i, s in enumerate(sizes * 6)]
  budget, slots = run.recipe.packing_layout()
  ds = packing.make_packed_dataset(
      clips, patchify=lambda lat: patching.patchify_clip(lat, run.config.model.patch),
      token_budget=budget, slots=slots, text_len=run.config.text.max_len, rows_per_batch=8,
      seed=0, process_index=0, process_count=1)
  return next(iter(ds))


@pytest.fixture(scope="module")
def packed_run():
  # Stand-in latents: the VAE is needed for its shapes only (no VAE init to compile).
  from sora_jax import runs
  from sora_jax.train.t2v_training import T2VTraining
  config = _packed_config()
  with config.unlocked():
    config.diffusion.latent_scale = 1.0
  return _Run(config, _packed_batch, T2VTraining(config, runs.t2v_system(config, abstract=True)))


def test_packed_step_sharded_equals_one_device(packed_run):
  """Rows of packed clips of mixed sizes, with frame-conditioning tasks, train the same with rows
  over fsdp, heads over tensor and every row's tokens over context (ring attention carrying
  segment ids) as on one device.
  (One mesh: each costs a train-step compile; the unpacked tests cover the others.)"""
  assert packed_run.batch["segment_ids"].max() >= 3      # several clips share a row
  ref = _reference(packed_run)
  got = packed_run.train(MESHES["f2t2c2"], init_params=ref["init"])
  _assert_same(ref, got, "f2t2c2")


@pytest.fixture(scope="module")
def vae_init(vae_run):
  # One-frame init: conv params do not depend on the clip length, and it compiles faster.
  recipe, cfg = vae_run.recipe, vae_run.config
  video = vae_run.batch["video"][:1, :1]
  return state_lib.unbox(jax.jit(recipe.init)(jax.random.key(cfg.seed), {"video": video}))


# One mesh for the VAE (its convs are the slowest compiles of the suite), sharding every axis it
# has rules for; the DiT above runs all four (the VAE's data=8 case cost 80 s).
@pytest.mark.parametrize("mesh_name", ["f2t2c2"])
def test_vae_step_sharded_equals_one_device(vae_run, vae_init, mesh_name):
  ref = _reference(vae_run, init_params=vae_init)
  got = vae_run.train(MESHES[mesh_name], init_params=vae_init)
  _assert_same(ref, got, mesh_name)


class _CountedRecipe:
  """The recipe with its loss wrapped by chex.assert_max_traces: a retrace raises."""

  def __init__(self, recipe, n):
    self._recipe = recipe
    self.loss = chex.assert_max_traces(recipe.loss, n=n)

  def __getattr__(self, name):
    return getattr(self._recipe, name)


def test_no_recompilation_across_steps(t2v_run):
  run = t2v_run
  mesh = _mesh(MESHES["d2f2t2"])
  it = pipeline.make_iterator(run.config.data, "train", seed=1)
  with run.context(mesh):
    first = run.recipe.prepare(next(it), mesh)
    built = loop.build_step(_CountedRecipe(run.recipe, n=1), run.config, mesh, first)
    state = built.init(jax.random.key(run.config.seed), first)
    # Born sharded over (2,2,2,1), yet the values of the one-device init.
    chex.assert_trees_all_close(jax.device_get(state.params), _reference(run)["init"])
    for step in range(3):  # new data and rng every step, same shapes and shardings
      batch = first if step == 0 else run.recipe.prepare(next(it), mesh)
      state, _ = built.step_fn(state, batch, steps_lib.step_rng(0, step))
  assert int(state.step) == 3
  assert built.step_fn._cache_size() == 1  # pylint: disable=protected-access


def test_sampled_video_same_on_one_and_eight_devices(t2v_run):
  run = t2v_run
  params = _reference(run)["params"]
  prompts = ["a red circle bounces to the right", "a blue square falls"]
  system = run.recipe.system
  one = t2v_pipeline.TextToVideo(system, params, on_long="warn")(prompts, seed=3)
  mesh = _mesh(MESHES["d2f2t2"])  # 2 prompts pad to 4 over data*fsdp; CFG pairs make 8 rows
  sharded = t2v_pipeline.TextToVideo(system, params, mesh=mesh, on_long="warn")
  eight = sharded(prompts, seed=3)
  assert eight.shape == one.shape == (2, run.config.data.frames, 32, 32, 3)
  assert eight.dtype == np.uint8
  # uint8 frames: float reassociation may flip a rounding, nothing more.
  assert np.abs(eight.astype(int) - one.astype(int)).max() <= 1
  assert not np.array_equal(eight[0], eight[1])  # two prompts, two different videos
  (compiled,) = sharded._sharded.values()  # pylint: disable=protected-access
  assert compiled.input_shardings[0][1].spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  other = sharded(prompts, seed=4)
  assert not np.array_equal(other, eight)


def test_sharding_golden_file(monkeypatch):
  # Shapes only: no data read and no VAE run (an untrained-VAE init or a latent-scale estimate
  # would be compute).
  monkeypatch.setattr(pipeline, "make_iterator", None)
  monkeypatch.setattr(jax, "jit", None)
  # What `sora-jax shardings --config=configs/t2v.py:runlocal,res=32,frames=9
  # --config.mesh.data=2 --config.mesh.fsdp=2 --config.mesh.tensor=2` prints on 8 devices.
  config = t2v_config.get_config("runlocal,res=32,frames=9")
  with config.unlocked():
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  text = shard_inspect.describe_config(config) + "\n"
  if os.environ.get("UPDATE_GOLDEN"):
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(text)
  assert GOLDEN.exists(), f"{GOLDEN} is missing; {REGENERATE}"
  want = GOLDEN.read_text()
  assert text == want, (
      f"parameter shardings of configs/t2v.py:runlocal,res=32,frames=9 on mesh (2,2,2,1) "
      f"changed; if that is intended, {REGENERATE}.\n--- got ---\n{text}")
  assert "'tensor'" in want and "'fsdp'" in want

"""Test-wide setup: 8 fake CPU devices, partitionable threefry, grain flags parsed.

XLA_FLAGS must be set before jax is imported anywhere, hence at conftest import time.
"""
import os

# The tests compile far more than they run (tiny shapes, a few steps each): LLVM at -O0 without
# its expensive passes cuts compile time by ~40 % (three model test files, cold cache, this
# 2-core box: 113 s -> 71 s wall, 173 -> 92 CPU-s). XLA:CPU's older loop emitters, in one LLVM
# module per kernel group instead of split for parallel codegen, take another ~35 % off (a cold
# runlocal t2v start to step 2: 55 -> 36 CPU-s; the two xdist workers keep both cores busy, so
# the split's parallelism bought nothing). Every comparison in the suite is between two programs
# built with the same flags. SORA_JAX_TEST_XLA_FLAGS="" restores XLA's defaults; the subprocess
# tests pass the same value on (tests/*: _env).
os.environ.setdefault("SORA_JAX_TEST_XLA_FLAGS",
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""),
                                    os.environ["SORA_JAX_TEST_XLA_FLAGS"],
                                    "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)

# One persistent XLA cache for the session: both xdist workers and every `sora-jax` subprocess
# (they inherit the variable) load what another already compiled — the same tiny VAE init,
# train step and sampler are built by many tests. Keyed by the lowered program, so it is never
# stale; a user's own $SORA_JAX_COMPILE_CACHE wins.
os.environ.setdefault("SORA_JAX_COMPILE_CACHE",
                      str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla"))
from sora_jax import compile_cache  # noqa: E402

compile_cache.enable()
# grain's multi-worker loader reads absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def real_videos_dir():
  d = SHARED / "data" / "real_videos"
  if not d.is_dir():
    pytest.skip(f"real videos not found at {d} (CI has ../shared beside the checkout)")
  return d


@pytest.fixture(scope="session")
def t2v_tiny():
  """A TextToVideo of the tiny runlocal t2v config (untrained VAE, perturbed DiT), 32x32x9."""
  import numpy as np

  from configs import t2v as t2v_config
  from sora_jax import runs
  from sora_jax.pipeline import TextToVideo
  config = t2v_config.get_config("runlocal,res=32,frames=9").unlock()
  config.diffusion.latent_scale = 0.9   # what a run would have resolved
  system = runs.t2v_system(config)
  params = runs.unbox(jax.jit(system.init)(jax.random.key(0), system.example_batch()))
  # Non-zero DiT output layers, so the prompt and the noise both reach the pixels.
  params = jax.tree.map(lambda p: p + 0.02 * np.random.default_rng(0).standard_normal(p.shape)
                        .astype(p.dtype), params)
  return TextToVideo(system, params, on_long="warn")   # runlocal reads 16 tokens

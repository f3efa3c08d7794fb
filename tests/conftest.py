"""Test-wide setup: 8 fake CPU devices, partitionable threefry, grain flags parsed.

XLA_FLAGS must be set before jax is imported anywhere, hence at conftest import time.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
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

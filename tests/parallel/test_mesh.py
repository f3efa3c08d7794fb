"""Mesh shapes from config: -1 fill, clear errors, axis types, device order, multi-process."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import ml_collections as mlc
import pytest
from jax.sharding import AxisType

from configs.common import mesh_config
from sora_jax.parallel import mesh as mesh_lib

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kw,n,want", [
    (dict(), 8, (8, 1, 1, 1)),
    (dict(fsdp=2, tensor=2), 8, (2, 2, 2, 1)),
    (dict(data=1, context=-1), 8, (1, 1, 1, 8)),
    (dict(data=2, fsdp=-1, tensor=2), 8, (2, 2, 2, 1)),
    (dict(data=1, fsdp=2, tensor=2, context=2), 8, (1, 2, 2, 2)),
    (dict(), 1, (1, 1, 1, 1)),
])
def test_resolve_mesh_shape(kw, n, want):
  assert mesh_lib.resolve_mesh_shape(mesh_config(**kw), n) == want


def test_resolve_accepts_plain_dict():
  assert mesh_lib.resolve_mesh_shape({"data": 2, "context": 4}, 8) == (2, 1, 1, 4)


@pytest.mark.parametrize("kw,match", [
    (dict(tensor=3), r"mesh\.tensor=3 does not divide 8 devices"),
    (dict(data=2, fsdp=2), r"multiply to 4 but there are 8 devices"),
    (dict(data=-1, fsdp=-1), r"only one mesh axis may be -1.*mesh\.data.*mesh\.fsdp"),
    (dict(context=0), r"mesh\.context=0 is invalid"),
])
def test_resolve_errors_name_the_key(kw, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.resolve_mesh_shape(mesh_config(**kw), 8)


def test_make_mesh_auto_axes():
  m = mesh_lib.make_mesh(mesh_config(fsdp=2, tensor=2))
  assert m.axis_names == mesh_lib.AXES
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2, "context": 1}
  assert m.axis_types == (AxisType.Auto,) * 4
  assert mesh_lib.batch_axes(m) == ("data", "fsdp")
  assert "data=2 fsdp=2 tensor=2 context=1 (8 devices, 1 process" in mesh_lib.describe_mesh(m)


def test_make_mesh_keeps_given_device_order():
  devs = jax.devices()[::-1][:4]
  m = mesh_lib.make_mesh(mlc.ConfigDict(dict(data=1, fsdp=1, tensor=2, context=-1)), devs)
  assert list(m.devices.flat) == devs
  assert m.devices.shape == (1, 1, 2, 2)
  assert m.axis_types == (AxisType.Auto,) * 4


def test_distributed_not_requested_is_noop(monkeypatch):
  for env in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(env, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert mesh_lib.maybe_initialize_distributed(mesh_config()) is False
  assert not called
  assert mesh_lib.is_primary()


def test_distributed_from_env(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(called))
  assert mesh_lib.maybe_initialize_distributed(mesh_config()) is True
  assert called == [dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)]
  assert jax.config.jax_cpu_collectives_implementation == "gloo"
  # idempotent: a second call does not initialize again
  assert mesh_lib.maybe_initialize_distributed(mesh_config()) is True
  assert len(called) == 1


def test_distributed_bad_env(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: None)
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
    mesh_lib.maybe_initialize_distributed(None)


_WORKER = """
import jax, jax.numpy as jnp, numpy as np
from configs.common import mesh_config
from sora_jax.parallel import mesh as ml, rules as rl
assert ml.maybe_initialize_distributed(mesh_config()) is True
assert ml.maybe_initialize_distributed(mesh_config()) is True  # idempotent
mesh = ml.make_mesh(mesh_config(data=2, fsdp=-1))
local = np.full((4, 3), jax.process_index() + 1.0, np.float32)
x = jax.make_array_from_process_local_data(rl.batch_sharding(mesh, 2), local)
total = jax.jit(jnp.sum, out_shardings=rl.replicated(mesh))(x)
print(f"RESULT {jax.process_index()} {jax.process_count()} {jax.device_count()} "
      f"{ml.is_primary()} {float(total)}", flush=True)
"""


def test_two_processes_form_one_mesh():
  """Two CPU processes x 4 devices join through env vars into one 8-device mesh (gloo)."""
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('SORA_JAX_TEST_XLA_FLAGS', '')} "
                                          "--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-c", _WORKER], env=env, cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  results = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-process workers timed out")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
    assert p.returncode == 0 and lines, out[-2000:]
    results.append(lines[-1].split()[1:])
  # process i contributed 12 values of (i + 1): 12 * 1 + 12 * 2 = 36 on both processes
  assert results == [["0", "2", "8", "True", "36.0"], ["1", "2", "8", "False", "36.0"]]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]

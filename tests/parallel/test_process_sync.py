"""process_sync: the barrier timeout is read from the environment with a clear error, and a
SyncedJit is jax.jit in a single process (the two-process path runs in test_multihost.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.parallel import process_sync


def test_barrier_timeout_from_environment(monkeypatch):
  monkeypatch.delenv(process_sync.ENV_TIMEOUT, raising=False)
  assert process_sync.barrier_timeout_s() == process_sync.DEFAULT_TIMEOUT_S
  monkeypatch.setenv(process_sync.ENV_TIMEOUT, "42")
  assert process_sync.barrier_timeout_s() == 42
  for bad in ("soon", "0", "-5"):
    monkeypatch.setenv(process_sync.ENV_TIMEOUT, bad)
    with pytest.raises(ValueError, match="SORA_JAX_BARRIER_TIMEOUT_S.*positive"):
      process_sync.barrier_timeout_s()


def test_synced_jit_is_jit_in_one_process():
  f = process_sync.SyncedJit(lambda x, y: jnp.sin(x) * y, "f")
  x, y = jnp.arange(4.0), jnp.float32(2.0)
  np.testing.assert_allclose(f(x, y), jnp.sin(x) * y, rtol=1e-6)
  process_sync.sync_processes("no_peers")   # one process: returns at once
  assert jax.process_count() == 1


def test_orbax_barriers_get_a_key_per_occurrence():
  """Orbax reuses a barrier's name on every save; through the coordination service each call
  must wait under its own key, so the n-th save's barrier meets only the peers' n-th."""
  from orbax.checkpoint._src.multihost import multihost
  process_sync.use_coordination_barriers()
  process_sync.use_coordination_barriers()          # idempotent: wrapped once
  hook = multihost._unique_barrier_key
  assert isinstance(hook, process_sync._OccurrenceKeys)
  assert not isinstance(hook.inner, process_sync._OccurrenceKeys)
  keys = [hook("Checkpointer:save"), hook("Checkpointer:save_start"), hook("Checkpointer:save")]
  assert len(set(keys)) == 3 and keys[0].startswith("Checkpointer:save#")
  n = int(keys[0].rsplit("#", 1)[1])
  assert keys[2] == f"Checkpointer:save#{n + 1}"

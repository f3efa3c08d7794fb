"""The CLI's persistent compilation cache (sora_jax/compile_cache.py), in-process and cheap."""
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import compile_cache

_OPTIONS = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
            "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(autouse=True)
def jax_cache_state(monkeypatch):
  """Each test starts with no cache configured; the session's settings come back afterwards."""
  from jax.experimental.compilation_cache import compilation_cache as jax_cc
  saved = {k: getattr(jax.config, k) for k in _OPTIONS}
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.setattr(compile_cache, "_ours", None)
  jax.config.update("jax_compilation_cache_dir", None)
  jax_cc.reset_cache()
  yield
  for k, v in saved.items():
    jax.config.update(k, v)
  jax_cc.reset_cache()


def _entries(path) -> set[str]:
  return {f for f in os.listdir(path) if not f.startswith(".")} if os.path.isdir(path) else set()


def _fresh_call(scale: float, n: int = 7):
  """Compiles (and runs) a program this process has not compiled: jax's in-memory caches are
  cleared, so only the persistent cache can spare the compile."""
  jax.clear_caches()
  return np.asarray(jax.jit(lambda x: jnp.tanh(x) * scale + x.sum())(jnp.arange(n, dtype=jnp.float32)))


class _Hits:

  def __init__(self):
    self.n = 0

  def __call__(self, event, **kw):
    self.n += event == "/jax/compilation_cache/cache_hits"


def test_entries_written_and_read_back_only_for_the_same_program(tmp_path):
  path = str(tmp_path / "xla")
  assert compile_cache.enable(path) == path
  _fresh_call(1.5)
  first = _entries(path)
  assert first, "a jitted call wrote no cache entry"
  hits = _Hits()
  jax.monitoring.register_event_listener(hits)
  try:
    _fresh_call(1.5)                  # the same program: loaded, nothing new written
    assert hits.n >= 1 and _entries(path) == first
    _fresh_call(2.5)                  # "edited code": another constant, another key
    assert _entries(path) > first
    _fresh_call(1.5, n=9)             # other shapes: another program too
    assert len(_entries(path)) > len(first) + 1
  finally:
    jax.monitoring.unregister_event_listener(hits)


def test_off_disables(tmp_path):
  path = str(tmp_path / "xla")
  compile_cache.enable(path)
  assert compile_cache.enable("off") is None
  assert not jax.config.jax_enable_compilation_cache
  before = _entries(path)
  _fresh_call(3.5)
  assert _entries(path) == before


def test_env_var_and_default_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "from_env"))
  assert compile_cache.enable() == str(tmp_path / "from_env")
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "from_env")
  assert compile_cache.enable("OFF") is None          # the flag beats the env var
  monkeypatch.setenv(compile_cache.ENV, "off")
  assert compile_cache.enable() is None
  monkeypatch.delenv(compile_cache.ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_dir() == str(tmp_path / "xdg" / "sora_jax" / "xla")


def test_users_own_jax_cache_is_left_alone(tmp_path, monkeypatch):
  mine = str(tmp_path / "users_jax_cache")
  jax.config.update("jax_compilation_cache_dir", mine)
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "ours"))
  assert compile_cache.enable() == mine
  assert jax.config.jax_compilation_cache_dir == mine
  assert not os.path.exists(tmp_path / "ours")


def test_unusable_dir_warns_and_runs_without_a_cache(tmp_path, caplog):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")   # fails for root too, unlike a chmod
  with caplog.at_level(logging.WARNING, logger="sora_jax.compile_cache"):
    assert compile_cache.enable(str(blocker / "xla")) is None
  assert "not usable" in caplog.text and "continuing without a cache" in caplog.text
  assert not jax.config.jax_enable_compilation_cache
  np.testing.assert_allclose(_fresh_call(4.5)[0], np.tanh(0.0) * 4.5 + 21.0)


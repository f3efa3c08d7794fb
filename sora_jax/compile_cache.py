"""The persistent XLA compilation cache of CLI runs (jax's own cache, in a user cache directory).

A restarted run, a resume or a `sample` after `train` loads the compiled programs from disk
instead of compiling them again (tens of seconds on CPU, minutes for large models on GPU).

Which directory, first match wins:
  1. `--compile_cache=DIR|off` on the command line;
  2. a cache the user configured for jax itself (JAX_COMPILATION_CACHE_DIR or
     jax.config's jax_compilation_cache_dir) — left exactly as it is;
  3. $SORA_JAX_COMPILE_CACHE (a directory, or `off`);
  4. ${XDG_CACHE_HOME:-~/.cache}/sora_jax/xla.

It stays correct when the code changes: jax keys an entry by a hash of the lowered program (its
HLO, with any closed-over constants), the devices, the compile options and XLA flags, and the
jax/jaxlib/backend versions. Edited code that lowers to another program misses and compiles
afresh; only an identical program is loaded. Entries are never evicted (jax evicts only with the
optional `filelock` package and a size limit); the directory can be deleted at any time.

The cache is trusted code: anyone who can write to the directory can make this process run
arbitrary code, so never point it at a directory others may write to.
"""
from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger(__name__)

ENV = "SORA_JAX_COMPILE_CACHE"
OFF = ("off", "none", "false", "0", "no")
_ours: str | None = None   # the directory enable() gave jax (not a user's own setting)


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "sora_jax", "xla")


def _writable(path: str) -> str | None:
  """None if `path` is (made) a writable directory, else why not."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
      pass
  except OSError as e:
    return f"{type(e).__name__}: {e}"
  return None


def _use(path: str | None) -> None:
  global _ours
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cc
  if path is None:
    jax.config.update("jax_enable_compilation_cache", False)
    if _ours is not None and jax.config.jax_compilation_cache_dir == _ours:
      jax.config.update("jax_compilation_cache_dir", None)
  else:
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    # jax's defaults keep only programs that took >= 1 s to compile; at this project's sizes
    # (CPU tests, runlocal) most programs compile in well under a second, and together they
    # are most of the start-up time, so every program is kept, however small or quick.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  _ours = path
  # jax opens its cache once per process, at the first compile: a process that has compiled
  # before (tests, notebooks) would otherwise keep writing to the previous directory.
  jax_cc.reset_cache()


def enable(flag: str | None = None) -> str | None:
  """Turns the cache on as the module docstring says; returns its directory, or None if off.

  `flag` is the --compile_cache value (None: not given). An unusable directory is logged as a
  warning and the run continues without a cache: a cache is never a reason to fail.
  """
  import jax
  user_jax_dir = jax.config.jax_compilation_cache_dir
  if flag is None and user_jax_dir and user_jax_dir != _ours:
    log.info("XLA compilation cache: %s (jax's own setting)", user_jax_dir)
    return user_jax_dir
  setting = (flag if flag is not None else os.environ.get(ENV, "")).strip()
  if setting.lower() in OFF:
    _use(None)
    return None
  path = os.path.abspath(os.path.expanduser(setting or default_dir()))
  problem = _writable(path)
  if problem:
    log.warning("XLA compilation cache %s is not usable (%s): continuing without a cache "
                "(set --compile_cache=DIR or $%s, or --compile_cache=off)", path, problem, ENV)
    _use(None)
    return None
  _use(path)
  log.debug("XLA compilation cache: %s", path)  # info would break one-line user errors
  return path


# Programs that run once per process (parameter and train-state inits): on XLA:CPU, LLVM at -O0
# without its expensive passes compiles them ~6x faster (the untrained runlocal VAE's init: 33 ->
# 5 CPU-s) and they run once, so their speed does not matter. Values may differ from an -O3
# build by 1 ulp (4 % of that VAE's params), the same on every mesh. Other backends: untouched.
ONE_SHOT_CPU_OPTIONS = {"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True}


def one_shot(fn, **jit_kwargs):
  """Like `jax.jit(fn, **jit_kwargs)` for a function called once: each call compiles with
  `compile_once` (a persistent-cache hit when the program was built before) and runs."""
  return lambda *args: compile_once(fn, *args, **jit_kwargs)(*args)


def compile_once(fn, *args, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` compiled ahead of time for `args`, for a program that runs
  once (an init); call the result with arguments of the same shapes and shardings."""
  import jax
  lowered = jax.jit(fn, **jit_kwargs).lower(*args)
  if jax.default_backend() == "cpu":
    return lowered.compile(compiler_options=ONE_SHOT_CPU_OPTIONS)
  return lowered.compile()

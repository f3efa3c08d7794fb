"""The training loop shared by every task (VAE, text-to-video, ...).

  config → validate → resolve (train/setup.py) → mesh → recipe (a system + trainer-only parts)
  → state from shapes (sharded) → AOT-compiled step → loop (log, checkpoint with the data
  iterator, periodic samples and held-out evaluation) → resume from the workdir.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from sora_jax import checkpoint as ckpt_lib
from sora_jax import compile_cache
from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import process_sync
from sora_jax.parallel import rules as rules_lib
from sora_jax.train import interrupts
from sora_jax.train import metrics as metrics_lib
from sora_jax.train import optimizer as optim_lib
from sora_jax.train import setup as setup_lib
from sora_jax.train import state as state_lib
from sora_jax.train import steps as steps_lib
from sora_jax.train import warm_start
from sora_jax.train.guard import NonFiniteGuard

log = logging.getLogger(__name__)
_IMPORTED = time.time()


def process_age() -> float:
  """Seconds since this process started (Linux /proc; elsewhere since this module's import)."""
  try:
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    with open("/proc/self/stat") as f:  # field 22, after the parenthesised command name
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED


class StartupClock:
  """Wall time of each phase before step 1, for the "first step done after" line (parsed by
  benchmarks/startup.py). "imports" is process start → Trainer: interpreter, imports, flags."""

  def __init__(self):
    self.phases: dict[str, float] = {"imports": process_age()}
    self._t = time.time()

  def mark(self, name: str) -> None:
    now = time.time()
    self.phases[name] = self.phases.get(name, 0.0) + now - self._t
    self._t = now

  def report(self) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items())
    return f"first step done after {process_age():.1f} s ({parts})"


class _GivenParams:
  """A recipe whose init returns the (boxed) params it was given."""

  def __init__(self, params):
    self.params = params

  def init(self, rng, batch):
    del rng, batch
    return self.params


def _same_state(a, b) -> bool:
  try:
    return bool(a == b)
  except (TypeError, ValueError):  # states holding arrays: not worth comparing
    return False


def _abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


@dataclasses.dataclass(frozen=True)
class BuiltStep:
  """What a mesh needs before step 1: abstract state, shardings, sharded init, compiled step."""
  abstract: Any            # TrainState of ShapeDtypeStructs carrying their shardings
  state_shardings: Any
  batch_shardings: Any
  init: Callable           # (rng, batch) -> TrainState, born sharded
  step_fn: Callable        # jitted train step (state donated)
  compiled: Any            # its AOT-compiled executable (memory / cost analyses)


def _optimizer(recipe, config, batch: dict):
  """(tx, schedule, boxed abstract params)."""
  boxed_params = jax.eval_shape(recipe.init, jax.random.key(config.seed), batch)
  tx, schedule = optim_lib.make_optimizer(config.optim, config.train.steps, boxed_params,
                                          players=getattr(recipe, "players", None),
                                          frozen=getattr(recipe, "frozen", ()))
  return tx, schedule, boxed_params


def make_optimizer(recipe, config, batch: dict):
  """(tx, schedule) for the recipe's params: decay mask and Muon's matrix axes come from the
  params' logical axis names, each player clipped by its own gradient norm."""
  return _optimizer(recipe, config, batch)[:2]


def build_step(recipe, config, mesh, batch: dict) -> BuiltStep:
  """Shapes → shardings → sharded init and AOT-compiled step, for `mesh` and `config.rules`.

  Nothing is allocated: `batch` only lends shapes and shardings. Call inside the mesh and
  logical-rules context (Trainer._context) so the models' logical constraints apply.
  """
  rules = rules_lib.rules_for(config.rules)
  tx, schedule, boxed_params = _optimizer(recipe, config, batch)
  init_fn = state_lib.make_init_fn(recipe, tx)
  # The state's shapes from the params' shapes: the model's init is traced once here, not twice.
  boxed = jax.eval_shape(lambda p: state_lib.make_init_fn(_GivenParams(p), tx)(None, None),
                         boxed_params)
  state_shardings = rules_lib.state_shardings(boxed, mesh, rules)
  abstract = _abstract_with_shardings(state_lib.unbox(boxed, apply_constraint=False),
                                      state_shardings)
  batch_shardings = jax.tree.map(lambda x: x.sharding, batch)
  # A one-shot program (-O0 on CPU), compiled only if called: a resumed run never inits.
  init = compile_cache.one_shot(lambda r, b: state_lib.unbox(init_fn(r, b)),
                                out_shardings=state_shardings)
  train_step = steps_lib.make_train_step(recipe, tx, schedule, config.optim.ema_decay)
  step_fn, compiled = steps_lib.compile_train_step(
      train_step, abstract, batch, steps_lib.step_rng(config.seed, 0),
      state_shardings=state_shardings, batch_shardings=batch_shardings,
      replicated=rules_lib.replicated(mesh))
  return BuiltStep(abstract, state_shardings, batch_shardings, init, step_fn, compiled)


def check_fits(facts: dict, report: str = "") -> None:
  """Raises MemoryError before step 1 when the compiled step's peak exceeds a device's memory."""
  limit, source = mesh_lib.device_memory_limit()
  peak = facts.get("peak_bytes_estimate")
  if limit is None or peak is None or peak <= limit:
    return
  raise MemoryError(
      f"the compiled train step needs ≈{peak / 2**30:.3g} GiB per device but a device holds "
      f"{limit / 2**30:.3g} GiB ({source}). Shard more: raise --config.mesh.fsdp (params and "
      f"optimizer state) or --config.mesh.tensor, lower --config.data.batch_size, or set "
      f"--config.model.remat_policy=nothing_saveable. [{report}]")


class Trainer:
  """Builds everything a run needs; `run()` trains, `dry_run()` only compiles and reports."""

  def __init__(self, config, workdir: str, *, resume_step: int | None = None,
               overwrite: bool = False):
    self.clock = StartupClock()
    mesh_lib.maybe_initialize_distributed(config.mesh)
    config_lib.validate(config, jax.device_count(), jax.process_count(), training=True)
    self.workdir, self.resume_step = workdir, resume_step
    self.primary = mesh_lib.is_primary()
    # Before anything is written: another run in this workdir is refused, not clobbered.
    if self.primary:
      setup_lib.check_workdir(config, workdir, overwrite=overwrite)
    warm_start.check(config)
    self.clock.mark("validate")
    # Values resolved from data / other runs are in the config before the system exists.
    self.config, resolved = setup_lib.resolve(config, workdir)
    self.clock.mark("resolve")
    self.resolved = setup_lib.public(resolved)
    config = self.config
    self.mesh = mesh_lib.make_mesh(config.mesh)
    self.rules = rules_lib.rules_for(config.rules)
    self.recipe = setup_lib.make_recipe(config, resolved)
    self.data_it = self.recipe.make_iterator(seed=config.seed)
    self.held_out = (setup_lib.held_out(config, setup_lib.held_out_num(config.train))
                     if config.train.eval_every and not config.train.dry_run else None)
    self.ckpt = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                      async_save=config.train.async_checkpoint)
    self.writer = metrics_lib.MetricWriter(workdir, enabled=self.primary)
    self.guard = NonFiniteGuard(config.train, workdir, self.ckpt, enabled=self.primary)
    self._batch_ids: list = []
    self._first_batch = None   # (iterator state before, after, batch, ids), kept by setup()
    if self.primary:
      runs.save_config(config, workdir)
      if self.resolved:  # a record of what the start of the run resolved (also in the log)
        runs.save_resolved(self.resolved, workdir)
    self.clock.mark("recipe+data")

  def _context(self):
    return mesh_lib.mesh_and_rules(self.mesh, self.rules)

  def _next_batch(self):
    first, self._first_batch = self._first_batch, None
    if first is not None and _same_state(self.data_it.get_state(), first[0]):
      self.data_it.set_state(first[1])
      self._batch_ids = first[3]
      return first[2]
    host = next(self.data_it)
    ids = host.get("seed", host.get("index"))
    self._batch_ids = [] if ids is None else np.asarray(ids).reshape(-1).tolist()
    return self.recipe.prepare(host, self.mesh)

  def setup(self, init_state: bool = True):
    """State (restored or fresh) and the compiled step. Leaves the iterator where it belongs.

    The step is compiled from the abstract state, so its memory is known (and checked against
    the device, `check_fits`) before any state is allocated; `init_state=False` (dry runs) stops
    there and returns None.
    """
    cfg = self.config
    with self._context():
      start = self.data_it.get_state()
      batch = self._next_batch()       # shapes for the abstract state, and step 1's batch
      # Unless a restore moves the iterator, step 1 reads this batch: made and encoded once.
      self._first_batch = (start, self.data_it.get_state(), batch, self._batch_ids)
      self.data_it.set_state(start)
      self.clock.mark("first_batch")
      t0 = time.time()
      built = build_step(self.recipe, cfg, self.mesh, batch)
      self.state_shardings, self.batch_shardings = built.state_shardings, built.batch_shardings
      self.replicated = rules_lib.replicated(self.mesh)
      self.step_fn, self.compiled = built.step_fn, built.compiled
      self.facts = steps_lib.compiled_facts(built.compiled)
      self.facts["compile_s"] = time.time() - t0
      # Peers meet before step 1's collectives: one of them may compile much slower.
      process_sync.sync_processes("train_step")
      self.facts["params"] = state_lib.param_count(built.abstract.params)
      check_fits(self.facts, self.report_facts())
      self.clock.mark("compile")
      if not init_state:
        return None
      self._drop_later_checkpoints()
      if self.ckpt.latest_step() is not None:
        step, state = self.ckpt.restore_intact(built.abstract, self.data_it)
        log.info("resumed from %s at step %d", self.ckpt.directory, step)
      else:
        step, state = 0, built.init(jax.random.key(cfg.seed), batch)
        if cfg.train.init_from:
          state = warm_start.apply(state, cfg, built.state_shardings)
      jax.block_until_ready(state)
      self.clock.mark("init")
    # Steps after the restored one are re-run: their old rows would appear twice.
    self.writer.drop_after(step)
    return state

  def _drop_later_checkpoints(self) -> None:
    """--resume_step=N: checkpoints after N belong to the abandoned trajectory."""
    n = self.resume_step
    if n is None:
      return
    steps = self.ckpt.all_steps()
    if n not in steps:
      raise FileNotFoundError(f"--resume_step={n}: {self.ckpt.directory} has no checkpoint {n}; "
                              f"it has {steps or 'none'}")
    for s in steps:
      if s > n:
        log.warning("--resume_step=%d: deleting checkpoint %d", n, s)
        self.ckpt.delete(s)

  def report_facts(self) -> str:
    f = self.facts
    mb = lambda k: f"{f.get(k, float('nan')) / 2**20:.1f} MiB"  # noqa: E731
    return (f"params={f['params']:,} | per device: args {mb('argument_size_in_bytes')}, "
            f"temp {mb('temp_size_in_bytes')}, peak≈{mb('peak_bytes_estimate')} | "
            f"step GFLOPs={f.get('flops', float('nan')) / 1e9:.2f} | "
            f"compile {f['compile_s']:.1f}s | mesh {dict(self.mesh.shape)}")

  def run(self, state=None, max_steps: int | None = None) -> dict:
    cfg = self.config
    state = self.setup() if state is None else state
    if self.primary:
      print(self.report_facts(), flush=True)
    total = cfg.train.steps
    start = int(state.step)
    stop = total if max_steps is None else min(total, start + max_steps)
    last: dict[str, float] = {}
    pbar = tqdm(total=total, initial=start, disable=not self.primary, dynamic_ncols=True,
                desc=cfg.task)
    t_last, n_since = time.time(), 0
    with self._context(), interrupts.StopRequests() as stop_request:
      nan_at = steps_lib.inject_nan_at()
      for step in range(start, stop):
        batch = self._next_batch()
        if step == nan_at:
          batch = steps_lib.nan_batch(batch)
        state, metrics = self.step_fn(state, batch, steps_lib.step_rng(cfg.seed, step))
        if step == start:
          jax.block_until_ready(metrics)
          self.clock.mark("first_step")
          if self.primary:
            log.info(self.clock.report())
        # The previous step's finiteness is read while this one runs (no host sync per step).
        self.guard.check_pending()
        n_since += 1
        done = step + 1
        self.guard.pending(done, metrics, self._batch_ids)
        if done % cfg.train.log_every == 0 or done == stop:
          self.guard.check_pending()
          last = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
          rate = n_since / max(time.time() - t_last, 1e-9)
          t_last, n_since = time.time(), 0
          self.writer.write_scalars(done, {**last, "steps_per_s": rate})
          pbar.set_postfix_str(metrics_lib.console_line(done, total, last, rate)
                               .split(" ", 2)[2][:120])
        if (done % cfg.train.ckpt_every == 0 or done == stop or stop_request.requested):
          self.guard.check_pending()  # never save a state the guard has not seen
          self.ckpt.save(done, state, self.data_it, force=stop_request.requested)
        if stop_request.requested:
          self._interrupted(stop_request, done, pbar)
        if cfg.train.sample_every and (done % cfg.train.sample_every == 0 or done == stop):
          self.visualize(state, batch, done)
        if self.held_out is not None and (done % cfg.train.eval_every == 0 or done == stop):
          self.evaluate(state, done)
        pbar.update(1)
    pbar.close()
    self.ckpt.wait()
    self.writer.flush()
    last["step"] = int(state.step)
    self.state = state
    return last

  def _interrupted(self, stop_request, done: int, pbar) -> None:
    pbar.close()
    self.ckpt.wait()
    self.writer.flush()
    message = (f"{stop_request.name()}: stopped after step {done}; checkpoint saved in "
               f"{self.ckpt.directory}. Run the same command to resume.")
    if self.primary:
      print(message, flush=True)
    raise interrupts.Interrupted(stop_request.signum, message)

  def visualize(self, state, batch, step: int) -> None:
    videos = self.recipe.visualize(state.ema_params, batch,
                                   steps_lib.step_rng(self.config.seed + 1, step))
    for name, frames in videos.items():
      self.writer.write_video(step, name, np.asarray(frames), fps=self.config.data.fps)

  def evaluate(self, state, step: int) -> dict:
    """Held-out metrics of the EMA params under `eval/` (fixed clips, noise and t grid)."""
    with self._context():
      scalars, videos = self.recipe.evaluate(state.ema_params, self.held_out)
    self.writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    for name, frames in videos.items():
      self.writer.write_video(step, f"eval_{name}", np.asarray(frames), fps=self.config.data.fps)
    return scalars

  def close(self) -> None:
    self.ckpt.close()
    self.writer.close()


def train(config, workdir: str, max_steps: int | None = None, *, resume_step: int | None = None,
          overwrite: bool = False) -> dict:
  trainer = Trainer(config, workdir, resume_step=resume_step, overwrite=overwrite)
  try:
    if config.train.dry_run:
      trainer.setup(init_state=False)
      if trainer.primary:
        print(trainer.report_facts(), flush=True)
      return dict(trainer.facts)
    return trainer.run(max_steps=max_steps)
  finally:
    trainer.close()

"""Faults inside a run: a non-finite step drops its update (state and checkpoints stay finite)
and the guard halts by policy; restarts leave no duplicated metric rows; a workdir holding
another run is refused before anything is written; a damaged export is refused."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from configs import t2v as t2v_config
from configs import vae as vae_config
from sora_jax import runs
from sora_jax.train import guard as guard_lib
from sora_jax.train import metrics as metrics_lib
from sora_jax.train import setup as setup_lib
from sora_jax.train import state as state_lib
from sora_jax.train import steps as steps_lib


class _Linear:
  """A one-matrix recipe: loss = mean((x @ w - y)^2)."""

  def init(self, rng, batch):
    return {"w": jax.random.normal(rng, (3, 2))}

  def loss(self, params, batch, rng, step):
    del rng, step
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), {}


def _run_steps(nan_at):
  recipe, tx = _Linear(), optax.adam(0.1)
  batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros((4, 2))}
  state = jax.jit(state_lib.make_init_fn(recipe, tx))(jax.random.key(0), batch)
  step = jax.jit(steps_lib.make_train_step(recipe, tx, optax.constant_schedule(0.1), 0.9))
  history = []
  for i in range(4):
    before = state
    fed = steps_lib.nan_batch(batch) if i == nan_at else batch   # what the loop's hook feeds
    state, metrics = step(state, fed, jax.random.key(i))
    history.append((before, state, metrics))
  return history


def test_a_nonfinite_step_drops_its_update_and_keeps_the_state_finite():
  history = _run_steps(nan_at=2)
  for i, (before, after, metrics) in enumerate(history):
    assert int(after.step) == i + 1                      # the batch is consumed either way
    leaves = jax.tree.leaves((after.params, after.opt_state, after.ema_params))
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    same = jax.tree.leaves(jax.tree.map(np.array_equal, before.params, after.params))
    if i == 2:
      assert float(metrics["finite"]) == 0.0 and all(same)   # the update was dropped
      chex_same = jax.tree.map(np.array_equal, before.opt_state, after.opt_state)
      assert all(jax.tree.leaves(chex_same))
    else:
      assert float(metrics["finite"]) == 1.0 and not all(same)


class _Ckpt:
  directory = "/nowhere/checkpoints"

  def wait(self):
    pass

  def all_steps(self):
    return [2, 4]


def _metrics(finite):
  return {"finite": jnp.float32(finite), "loss": jnp.float32(np.nan if not finite else 1.0)}


def test_guard_halts_by_policy_and_names_where_to_resume(tmp_path):
  cfg = mlc.ConfigDict({"nonfinite": "skip", "max_nonfinite": 2})
  g = guard_lib.NonFiniteGuard(cfg, str(tmp_path), _Ckpt())
  g.pending(5, _metrics(False), [11, 12])
  g.check_pending()                                    # one in a row: skipped, no halt
  g.pending(6, _metrics(True), [13])
  g.check_pending()                                    # the streak resets
  g.pending(7, _metrics(False), [14])
  g.check_pending()
  g.pending(8, _metrics(False), [15, 16])
  with pytest.raises(guard_lib.NonFiniteError, match=r"step 8 .*--resume_step") as e:
    g.check_pending()
  assert "[2, 4]" in str(e.value)
  record = json.loads((tmp_path / "nonfinite.json").read_text())
  assert record["step"] == 8 and record["batch_ids"] == [15, 16]
  halt = guard_lib.NonFiniteGuard(mlc.ConfigDict({"nonfinite": "halt", "max_nonfinite": 9}),
                                  str(tmp_path), _Ckpt())
  halt.pending(3, _metrics(False), [])
  with pytest.raises(guard_lib.NonFiniteError, match="train.nonfinite='halt'"):
    halt.check_pending()


def test_restart_drops_metric_rows_past_the_restored_step(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path))
  for s in (1, 2, 3, 4):
    w.write_scalars(s, {"loss": s})
  w._jsonl.write('{"step": 5, "lo')   # a row torn by a kill  # pylint: disable=protected-access
  w._jsonl.flush()                                   # pylint: disable=protected-access
  assert w.drop_after(2) == 3
  w.write_scalars(3, {"loss": 30.0})                 # the re-run step appends after the cut
  w.close()
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] == 30.0


def test_workdir_holding_another_run_is_refused_byte_for_byte(tmp_path):
  wd = tmp_path / "run"
  vae = vae_config.get_config("runlocal,res=32,frames=9")
  runs.save_config(vae, str(wd))
  (wd / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
  before = {p: p.read_bytes() for p in wd.iterdir()}
  t2v = t2v_config.get_config("runlocal,res=32,frames=9")
  with pytest.raises(setup_lib.WorkdirConflict, match=r"another vae run \(task: vae → t2v\)"):
    setup_lib.check_workdir(t2v, str(wd))
  assert {p: p.read_bytes() for p in wd.iterdir()} == before
  other = vae_config.get_config("runlocal,res=32,frames=9,shortcut=false")
  with pytest.raises(setup_lib.WorkdirConflict, match="vae.shortcut: True → False"):
    setup_lib.check_workdir(other, str(wd))
  longer = vae.copy_and_resolve_references().unlock()
  longer.train.steps = 99                              # continuing the same run is fine
  setup_lib.check_workdir(longer, str(wd))
  setup_lib.check_workdir(t2v, str(wd), overwrite=True)   # explicit: the old run is deleted
  assert not (wd / "config.json").exists() and not (wd / "metrics.jsonl").exists()


def test_a_damaged_export_is_refused(tmp_path):
  params = {"dit": {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}}
  path = runs.write_export_params(str(tmp_path), params)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  np.testing.assert_array_equal(runs.load_params(str(tmp_path), abstract)["dit"]["w"],
                                params["dit"]["w"])
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(runs.RunError, match="damaged"):
    runs.load_params(str(tmp_path), abstract)
  os.remove(path + ".sha256")                          # no checksum: msgpack garbage is named
  open(path, "wb").write(b"\x00garbage")
  with pytest.raises(runs.RunError, match="cannot be read"):
    runs.load_params(str(tmp_path), abstract)

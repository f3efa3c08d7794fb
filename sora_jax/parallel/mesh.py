"""Device meshes from config: the four named axes every sharding in the repo refers to.

Axes, outermost first (the order matters: the last axes are the ones that land on the fastest
interconnect, so the chattiest collectives — tensor and context — go last):

  data     pure data parallelism: params replicated, batch split.
  fsdp     batch split AND params/optimizer state sharded (ZeRO-3 style).
  tensor   Megatron-style split of heads and MLP hidden units.
  context  sequence (spacetime-token) split for long videos; ring / all-gather attention.

`config.mesh` (configs/common.py `mesh_config()`) gives each axis a size; -1 means "fill with the
devices the other axes leave". Axis types are `AxisType.Auto`: jax >= 0.10 defaults
`jax.make_mesh` to Explicit, under which flax's logical constraints do not apply.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from sora_jax.parallel import process_sync

AXES: tuple[str, str, str, str] = ("data", "fsdp", "tensor", "context")
BATCH_AXES: tuple[str, str] = ("data", "fsdp")

_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _get(mesh_cfg: Any, key: str, default: Any = None) -> Any:
  if isinstance(mesh_cfg, Mapping):
    return mesh_cfg.get(key, default)
  return getattr(mesh_cfg, key, default)


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int, int]:
  """Sizes of (data, fsdp, tensor, context); at most one -1, which takes what the rest leave.

  Raises ValueError naming the offending `mesh.<axis>` key when the sizes cannot tile
  `num_devices` exactly.
  """
  if num_devices < 1:
    raise ValueError(f"need at least one device, got num_devices={num_devices}")
  sizes = []
  for ax in AXES:
    v = _get(mesh_cfg, ax, 1)
    try:
      v = int(v)
    except (TypeError, ValueError):
      raise ValueError(f"mesh.{ax} must be an integer (or -1 to fill), got {v!r}") from None
    if v == 0 or v < -1:
      raise ValueError(f"mesh.{ax}={v} is invalid: use a positive size, or -1 to fill with the "
                       f"remaining devices")
    sizes.append(v)
  fill = [ax for ax, v in zip(AXES, sizes) if v == -1]
  if len(fill) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {', '.join('mesh.' + a for a in fill)} "
                     f"= -1; give all but one an explicit size")
  known = [(ax, v) for ax, v in zip(AXES, sizes) if v != -1]
  for ax, v in known:
    if num_devices % v:
      raise ValueError(f"mesh.{ax}={v} does not divide {num_devices} devices; choose a divisor "
                       f"of {num_devices} (e.g. {_divisors(num_devices)})")
  fixed = math.prod(v for _, v in known)
  shape_str = ", ".join(f"{ax}={v}" for ax, v in zip(AXES, sizes))
  if fill:
    if num_devices % fixed:
      raise ValueError(f"mesh sizes ({shape_str}) multiply to {fixed}, which does not divide "
                       f"{num_devices} devices, so mesh.{fill[0]}=-1 cannot fill the rest; "
                       f"shrink one of the explicit sizes")
    sizes[AXES.index(fill[0])] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(f"mesh sizes ({shape_str}) multiply to {fixed} but there are {num_devices} "
                     f"devices; set one axis (usually mesh.data) to -1 to fill the rest")
  return tuple(sizes)  # type: ignore[return-value]


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def make_mesh(mesh_cfg: Any, devices: Sequence[Any] | None = None) -> Mesh:
  """A `Mesh` over `devices` (default: all global devices) with axes `AXES`, all AxisType.Auto.

  Without explicit devices, `jax.make_mesh` picks a topology-aware device order (ICI rings on
  TPU); with explicit devices their order is kept (tests, sub-meshes).
  """
  n = len(devices) if devices is not None else jax.device_count()
  shape = resolve_mesh_shape(mesh_cfg, n)
  axis_types = (AxisType.Auto,) * len(AXES)
  if devices is None:
    return jax.make_mesh(shape, AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES, axis_types=axis_types)


def _distributed_requested(mesh_cfg: Any) -> bool:
  if mesh_cfg is not None and bool(_get(mesh_cfg, "distributed", False)):
    return True
  return bool(os.environ.get(_ENV_COORDINATOR)) or bool(os.environ.get(_ENV_NUM_PROCESSES))


def maybe_initialize_distributed(mesh_cfg: Any = None) -> bool:
  """Joins the multi-process job when asked; returns whether JAX is now multi-process-initialized.

  Asked = `mesh.distributed` is true, or `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` is set
  in the environment (then `JAX_PROCESS_ID` gives this process's rank). On TPU pods / SLURM /
  k8s with `mesh.distributed=True` and no env vars, jax auto-detects the cluster. Must run before
  anything touches devices. Calling it again is a no-op.
  """
  if jax.distributed.is_initialized():
    return True
  if not _distributed_requested(mesh_cfg):
    return False
  kwargs: dict[str, Any] = {}
  if os.environ.get(_ENV_COORDINATOR):
    kwargs["coordinator_address"] = os.environ[_ENV_COORDINATOR]
  for env, key in ((_ENV_NUM_PROCESSES, "num_processes"), (_ENV_PROCESS_ID, "process_id")):
    if os.environ.get(env):
      try:
        kwargs[key] = int(os.environ[env])
      except ValueError:
        raise ValueError(f"environment variable {env} must be an integer, "
                         f"got {os.environ[env]!r}") from None
  # CPU processes need a collectives backend to talk to each other; gloo ships with jaxlib.
  # Only the CPU client reads this flag, so it is harmless on GPU/TPU jobs.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(**kwargs)
  process_sync.use_coordination_barriers()
  return True


def is_primary() -> bool:
  """True on process 0 — the only one that writes logs, samples and videos."""
  return jax.process_index() == 0


def batch_axes(mesh: Mesh | None = None) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over (those of `mesh` that exist, in order)."""
  if mesh is None:
    return BATCH_AXES
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def describe_mesh(mesh: Mesh) -> str:
  """'data=2 fsdp=2 tensor=2 context=1 (8 devices, 1 process, cpu)' for logs."""
  axes = " ".join(f"{n}={s}" for n, s in mesh.shape.items())
  procs = len({d.process_index for d in mesh.devices.flat})
  plat = next(iter(mesh.devices.flat)).platform
  return (f"{axes} ({mesh.devices.size} devices, {procs} process{'es' if procs > 1 else ''}, "
          f"{plat})")


@contextlib.contextmanager
def mesh_and_rules(mesh: Mesh, rules):
  """Enters the mesh, then flax's logical axis rules: the context every sharded step runs in."""
  import flax.linen as nn
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


# Overrides the per-device memory limit the compiled step is checked against, in GiB. Devices
# that report one (GPU/TPU `memory_stats()['bytes_limit']`) need no override; CPU reports none.
ENV_DEVICE_MEMORY_GB = "SORA_JAX_DEVICE_MEMORY_GB"


def device_memory_limit() -> tuple[float | None, str]:
  """(bytes a device may hold, where that figure came from); (None, ...) when unknown."""
  env = os.environ.get(ENV_DEVICE_MEMORY_GB, "").strip()
  if env:
    try:
      return float(env) * 2**30, f"${ENV_DEVICE_MEMORY_GB}={env}"
    except ValueError:
      raise ValueError(f"{ENV_DEVICE_MEMORY_GB}={env!r} must be a number of GiB") from None
  dev = jax.local_devices()[0]
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without memory stats
    stats = {}
  limit = stats.get("bytes_limit")
  return (float(limit), f"{dev.device_kind} bytes_limit") if limit else (None, "")

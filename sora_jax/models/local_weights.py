"""Frozen weights from LOCAL files (.safetensors or .npz): flat {name: array} dicts.

Nothing here downloads; the networks that use it (perceptual.py, i3d.py) are optional and only
run when a config or flag points at a file.
"""
from __future__ import annotations

import os

import numpy as np


def read_arrays(path: str, flag: str) -> dict[str, np.ndarray]:
  """{name: array} from `path`; `flag` names the setting that gave the path, for the error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{flag}={path!r} does not exist; point it at a local "
                            ".safetensors or .npz file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  raise ValueError(f"{flag}={path!r}: use a .safetensors or .npz file")


def write_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
  """float32 arrays to .safetensors or .npz (e.g. after converting a PyTorch state dict)."""
  arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in arrays.items()}
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file
    save_file(arrays, path)
  elif path.endswith(".npz"):
    np.savez(path, **arrays)
  else:
    raise ValueError(f"{path!r}: use a .safetensors or .npz file")

"""Notebooks run top to bottom with imports alone (quick mode), like a fresh Colab session."""
import json
import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
  from sora_jax import demo
  if not os.path.isdir(os.path.join(demo.ASSETS, "t2v")):
    pytest.skip("demo weights not built (sora-jax demo --train)")
  monkeypatch.setenv("SORA_JAX_NOTEBOOK_QUICK", "1")
  monkeypatch.chdir(tmp_path)
  nb = json.loads(path.read_text())
  scope: dict = {"__name__": "__notebook__"}
  for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
      continue
    source = "".join(cell["source"])
    try:
      exec(compile(source, f"{path.name}[cell {i}]", "exec"), scope)  # noqa: S102
    except Exception as e:  # noqa: BLE001
      raise AssertionError(f"{path.name} cell {i} failed: {e!r}\n{source}") from e

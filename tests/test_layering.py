"""Data flows one way: no import cycles among sora_jax modules (function-level imports
included), and inference and evaluation never import training code."""
import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "sora_jax"

# A module may import only modules of its own layer or of layers before it.
LAYERS = [
    ("sora_jax.config_sections", "sora_jax.config_geometry", "sora_jax.config", "sora_jax.safety",
     "sora_jax.io", "sora_jax.compile_cache"),
    ("sora_jax.data",),
    ("sora_jax.models",),
    ("sora_jax.diffusion", "sora_jax.parallel"),
    ("sora_jax.eval.recon", "sora_jax.eval.worlds", "sora_jax.eval.flops",
     "sora_jax.eval.counterfactual"),
    ("sora_jax.systems", "sora_jax.checkpoint"),
    ("sora_jax.runs",),
    ("sora_jax.pipeline", "sora_jax.sampling_budget"),
    ("sora_jax.sample_job",),
    ("sora_jax.train",),
    ("sora_jax.eval",),
    ("sora_jax.demo", "sora_jax.cli"),
]


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PKG.rglob("*.py"):
    name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    out[name.removesuffix(".__init__")] = path
  return out


def _resolve(name: str, mods) -> str | None:
  while name and name not in mods:
    name = name.rpartition(".")[0]
  return name or None


def _edges(mods) -> dict[str, set[str]]:
  edges = {m: set() for m in mods}
  for m, path in mods.items():
    for node in ast.walk(ast.parse(path.read_text())):   # every import, at any depth
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" for a in node.names] or [node.module]
      for n in names:
        if n.startswith("sora_jax"):
          r = _resolve(n, mods)
          if r and r != m and r != "sora_jax":
            edges[m].add(r)
  return edges


def _layer(module: str) -> int:
  best, rank = -1, None
  for i, prefixes in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > best:
        best, rank = len(p), i
  assert rank is not None, f"{module} is in no layer of tests/test_layering.py; add it"
  return rank


def test_no_import_cycles():
  edges = _edges(_modules())
  state: dict[str, int] = {}

  def visit(m, stack):
    state[m] = 1
    for o in edges[m]:
      assert state.get(o) != 1, "import cycle: " + " -> ".join(stack + [m, o])
      if o not in state:
        visit(o, stack + [m])
    state[m] = 2

  for m in edges:
    if m not in state:
      visit(m, [])


def test_imports_follow_the_layers():
  bad = [f"{m} (layer {_layer(m)}) imports {o} (layer {_layer(o)})"
         for m, outs in _edges(_modules()).items() for o in outs if _layer(o) > _layer(m)]
  assert not bad, "\n".join(bad)


def test_inference_and_eval_never_import_training():
  edges = _edges(_modules())
  for m, outs in edges.items():
    if m.startswith(("sora_jax.eval", "sora_jax.pipeline", "sora_jax.runs", "sora_jax.systems")):
      assert not [o for o in outs if o.startswith("sora_jax.train")], m


def test_the_checker_sees_function_level_imports(tmp_path):
  (tmp_path / "x.py").write_text("def f():\n  from sora_jax.train import loop\n")
  (tmp_path / "loop.py").write_text("X = 1\n")
  mods = {"sora_jax.eval.x": tmp_path / "x.py", "sora_jax.train.loop": tmp_path / "loop.py"}
  assert _edges(mods)["sora_jax.eval.x"] == {"sora_jax.train.loop"}

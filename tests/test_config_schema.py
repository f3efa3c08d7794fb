"""One config schema: the section builders (sora_jax/config_sections.py) define every key; the
schema, the shipped configs and the library's reads agree with them.

(a) SCHEMA / ENUMS are the builders' keys; every shipped config has exactly the schema's keys.
(b) Every config key the library reads (found statically, with `ast`) is in the schema.
(c) Every schema key is read somewhere in sora_jax/ (exceptions listed with a reason).
(d) `complete` brings an older run's config.json into today's schema.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import pathlib

import ml_collections as mlc
import pytest

from configs import common, demo, dit_paper, t2v, vae
from sora_jax import config as C
from sora_jax import config_sections as S

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sora_jax"
ASSETS = PACKAGE / "assets" / "demo"
SECTION_NAMES = tuple(S.SECTIONS)

# The files that define and validate the schema read every key by construction; not evidence.
SCAN_SKIP = {"sora_jax/config.py", "sora_jax/config_sections.py"}
# Names that look like configs (config, cfg, *_cfg) in a file but hold something else. (Params
# and dataclass fields annotated with another type, e.g. `cfg: T5Config`, and names assigned a
# CapWords constructor call, are recognised without an entry here.)
NOT_CONFIG: dict[str, tuple[str, ...]] = {}
# Reads the scan reports that are not reads of a config key, with the reason.
FALSE_READS: dict[tuple[str, str], str] = {
    ("sora_jax/data/tokenizer.py", "text.text"):
        "tokenizer_for_text_config(text_cfg) also accepts the whole config: `'text' in text_cfg` "
        "then picks its text section",
}
# Schema keys no library code reads (yet), with the reason. Keep empty where possible: a key
# nobody reads is a knob that does nothing.
UNREAD_OK: dict[str, str] = {}


# =============================================================================== the scanner
# What counts as a config (pragmatic, per function scope):
#   * names config / cfg / run_cfg / run_config are a whole config; <section>_cfg and
#     <section>_config (vae_cfg, model_cfg, sample_cfg, ...) are that section;
#   * any name (or self.attr) assigned from one: `d = config.data`, `o, t = config.get("optim"),
#     ...`, `self.cfg = config.vae` (then self.cfg is the vae section in every method);
#   * unless annotated as another type (`cfg: T5Config`) or assigned a CapWords constructor.
# What counts as a read of key K of such an object X: X.K, X.get("K"), X["K"], _get(X, "K", d),
# getattr(X, "K"), "K" in X, and the same with a loop variable over a literal tuple / dict of
# keys (`for k in ("width", "depth")`, `for k, d in defaults.items()`, a module-level tuple).
# ConfigDict's own methods (get, items, lock, ...) are not keys. Everything else, e.g. a
# `stats.get("bytes_limit")` on a plain dict, is not looked at.
ROOT = ""  # the kind of a whole config (top level); a section's kind is its name

_ROOT_NAMES = ("config", "cfg", "run_cfg", "run_config")
_CONFIGDICT_API = frozenset({
    "allow_dotted_keys", "convert_dict", "copy_and_resolve_references", "eq_as_configdict",
    "get", "get_oneway_ref", "get_ref", "get_type", "ignore_type", "is_locked", "is_type_safe",
    "items", "iteritems", "iterkeys", "itervalues", "keys", "lock", "to_dict", "to_json",
    "to_json_best_effort", "to_yaml", "unlock", "unlocked", "update",
    "update_from_flattened_dict", "values"})
_SAME_KIND_METHODS = frozenset({"copy_and_resolve_references", "unlock", "lock"})
_CONFIG_ANNOTATIONS = ("ConfigDict", "Any", "Mapping", "dict")
_GETTERS = frozenset({"_get", "getattr", "hasattr"})   # f(obj, "key", ...)


@dataclasses.dataclass(frozen=True)
class Read:
  section: str   # ROOT for a top-level key
  key: str
  where: str     # path:line

  @property
  def dotted(self):
    return self.key if self.section == ROOT else f"{self.section}.{self.key}"


def _str(node):
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Scanner:

  def __init__(self, sections, path, not_config=()):
    self.sections = frozenset(sections)
    self.path = path
    self.not_config = frozenset(not_config)   # names that look like configs here but are not
    self.reads: list[Read] = []
    self.module_consts: dict[str, list[str]] = {}

  # ---- kinds ---------------------------------------------------------------------------------
  def name_kind(self, name):
    if name in self.not_config:
      return None
    if name in _ROOT_NAMES:
      return ROOT
    for suffix in ("_cfg", "_config"):
      if name.endswith(suffix) and name[:-len(suffix)] in self.sections:
        return name[:-len(suffix)]
    return None

  def kind(self, node, env, cls):
    if isinstance(node, ast.Name):
      if node.id in env:
        return env[node.id]
      return self.name_kind(node.id)
    if isinstance(node, ast.Attribute):
      if isinstance(node.value, ast.Name) and node.value.id == "self":
        return cls[node.attr] if node.attr in cls else self.name_kind(node.attr)
      return self._child(self.kind(node.value, env, cls), node.attr)
    if isinstance(node, ast.Subscript):
      return self._child(self.kind(node.value, env, cls), _str(node.slice))
    if isinstance(node, ast.Call):
      f = node.func
      if isinstance(f, ast.Attribute):
        if f.attr in _SAME_KIND_METHODS:
          return self.kind(f.value, env, cls)
        if f.attr == "get" and node.args:
          return self._child(self.kind(f.value, env, cls), _str(node.args[0]))
      if isinstance(f, ast.Name) and f.id in _GETTERS and len(node.args) >= 2:
        return self._child(self.kind(node.args[0], env, cls), _str(node.args[1]))
    if isinstance(node, ast.BoolOp):
      for v in node.values:
        k = self.kind(v, env, cls)
        if k is not None:
          return k
    if isinstance(node, ast.IfExp):
      k = self.kind(node.body, env, cls)
      return k if k is not None else self.kind(node.orelse, env, cls)
    return None

  def _child(self, parent, key):
    if parent == ROOT and key in self.sections:
      return key
    return None

  # ---- environments ---------------------------------------------------------------------------
  def func_env(self, fn, outer, cls):
    env = dict(outer)
    args = fn.args
    for a in args.posonlyargs + args.args + args.kwonlyargs:
      annotation = ast.unparse(a.annotation) if a.annotation is not None else ""
      if annotation and not any(t in annotation for t in _CONFIG_ANNOTATIONS):
        env[a.arg] = None   # annotated as something else (e.g. cfg: T5Config)
      else:
        env[a.arg] = self.name_kind(a.arg)
    for _ in range(2):
      for node in _walk_scope(fn):
        if isinstance(node, ast.Assign):
          for target in node.targets:
            self._bind(target, node.value, env, cls)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
          self._bind(node.target, node.value, env, cls)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
          self._bind(node.optional_vars, node.context_expr, env, cls)
    return env

  def _bind(self, target, value, env, cls, self_attrs=None):
    if isinstance(target, ast.Name):
      k = self.kind(value, env, cls)
      if k is not None:
        env[target.id] = k
      elif _constructs_other_class(value):
        env[target.id] = None   # cfg = T5Config(...): named like a config, but is not one
    elif (self_attrs is not None and isinstance(target, ast.Attribute)
          and isinstance(target.value, ast.Name) and target.value.id == "self"):
      k = self.kind(value, env, cls)
      if k is not None:
        self_attrs[target.attr] = k
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
      for t, v in zip(target.elts, value.elts):
        self._bind(t, v, env, cls, self_attrs)

  # ---- loop variables over literal keys --------------------------------------------------------
  def literal_strings(self, node, fn):
    """The strings an iterable expression yields, when it is a literal (or names one)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
      vals = [_str(e) for e in node.elts]
      return vals if all(v is not None for v in vals) else None
    if isinstance(node, ast.Dict):
      vals = [_str(k) for k in node.keys]
      return vals if all(v is not None for v in vals) else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
      if not node.args and all(k.arg for k in node.keywords):
        return [k.arg for k in node.keywords]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("keys", "items") and not node.args):
      return self.literal_strings(node.func.value, fn)
    if isinstance(node, ast.Name):
      for scope in ([fn] if fn is not None else []):
        for n in _walk_scope(scope):
          if (isinstance(n, ast.Assign) and len(n.targets) == 1
              and isinstance(n.targets[0], ast.Name) and n.targets[0].id == node.id):
            return self.literal_strings(n.value, fn)
      return self.module_consts.get(node.id)
    return None

  def _loop_bind(self, target, it, fn, out):
    if isinstance(target, ast.Name):
      vals = self.literal_strings(it, fn)
      if vals is not None:
        out.setdefault(target.id, []).extend(vals)
    elif isinstance(target, ast.Tuple):
      if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip":
        for t, a in zip(target.elts, it.args):
          self._loop_bind(t, a, fn, out)
      elif (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
            and it.func.attr == "items" and target.elts):
        self._loop_bind(target.elts[0], it, fn, out)
      elif isinstance(it, (ast.Tuple, ast.List)):
        # for key, default in (("a", 1), ("b", 2)): the first element of each pair
        firsts = [e.elts[0] for e in it.elts if isinstance(e, ast.Tuple) and e.elts]
        vals = [_str(e) for e in firsts]
        if target.elts and isinstance(target.elts[0], ast.Name) and vals and all(vals):
          out.setdefault(target.elts[0].id, []).extend(vals)

  # ---- reads --------------------------------------------------------------------------------
  def record(self, kind, key_node, node, loops):
    if kind is None:
      return
    lit = _str(key_node) if isinstance(key_node, ast.AST) else key_node
    if lit is not None:
      keys = [lit]
    elif isinstance(key_node, ast.Name) and key_node.id in loops:
      keys = loops[key_node.id]
    else:
      return
    for key in keys:
      if key in _CONFIGDICT_API:
        continue
      self.reads.append(Read(kind, key, f"{self.path}:{node.lineno}"))

  def scan_function(self, fn, env, cls, loops):
    for child in ast.iter_child_nodes(fn):
      self._scan(child, fn, env, cls, loops)

  def _scan(self, node, fn, env, cls, loops):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      return   # its own scope: visited by visit_body / visit_class
    if isinstance(node, ast.For):
      inner = dict(loops)
      bound: dict[str, list[str]] = {}
      self._loop_bind(node.target, node.iter, fn, bound)
      inner.update(bound)
      self._scan(node.iter, fn, env, cls, loops)
      for child in node.body + node.orelse:
        self._scan(child, fn, env, cls, inner)
      return
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
      inner = dict(loops)
      for gen in node.generators:
        self._scan(gen.iter, fn, env, cls, inner)
        bound: dict[str, list[str]] = {}
        self._loop_bind(gen.target, gen.iter, fn, bound)
        inner.update(bound)
        for cond in gen.ifs:
          self._scan(cond, fn, env, cls, inner)
      for part in ((node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)):
        self._scan(part, fn, env, cls, inner)
      return
    self._check(node, env, cls, loops)
    for child in ast.iter_child_nodes(node):
      self._scan(child, fn, env, cls, loops)

  def _check(self, node, env, cls, loops):
    if isinstance(node, ast.Attribute):
      if isinstance(node.value, ast.Name) and node.value.id == "self":
        return
      k = self.kind(node.value, env, cls)
      if k is not None and node.attr not in _CONFIGDICT_API:
        self.record(k, node.attr, node, loops)
    elif isinstance(node, ast.Subscript):
      self.record(self.kind(node.value, env, cls), node.slice, node, loops)
    elif isinstance(node, ast.Call):
      f = node.func
      if isinstance(f, ast.Attribute) and f.attr == "get" and node.args:
        self.record(self.kind(f.value, env, cls), node.args[0], node, loops)
      elif isinstance(f, ast.Name) and f.id in _GETTERS and len(node.args) >= 2:
        self.record(self.kind(node.args[0], env, cls), node.args[1], node, loops)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(
        node.ops[0], (ast.In, ast.NotIn)):
      self.record(self.kind(node.comparators[0], env, cls), node.left, node, loops)

  def visit_body(self, owner, env, cls, loops):
    """Scans `owner`'s own scope, then recurses into nested functions and classes."""
    self.scan_function(owner, env, cls, loops)
    for child in _nested(owner):
      if isinstance(child, ast.ClassDef):
        self.visit_class(child, env)
      else:
        fenv = self.func_env(child, env, cls)
        self.visit_body(child, fenv, cls, loops)

  def visit_class(self, node, env):
    cls: dict[str, str | None] = {}
    for n in node.body:   # dataclass / flax fields: `cfg: T5Config` is not a config
      if (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
          and not any(t in ast.unparse(n.annotation) for t in _CONFIG_ANNOTATIONS)):
        cls[n.target.id] = None
    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for _ in range(2):   # self.x = config.vae in __init__ makes self.x a vae section everywhere
      for m in methods:
        menv = self.func_env(m, env, cls)
        for n in _walk_scope(m):
          if isinstance(n, ast.Assign):
            for t in n.targets:
              self._bind(t, n.value, dict(menv), cls, self_attrs=cls)
    self.scan_function(node, env, cls, {})
    for child in _nested(node):
      if isinstance(child, ast.ClassDef):
        self.visit_class(child, env)
      else:
        self.visit_body(child, self.func_env(child, env, cls), cls, {})

  def scan_module(self, tree):
    for n in tree.body:
      target = (n.targets[0] if isinstance(n, ast.Assign) and len(n.targets) == 1 else
                n.target if isinstance(n, ast.AnnAssign) and n.value is not None else None)
      if isinstance(target, ast.Name):
        vals = self.literal_strings(n.value, None)
        if vals is not None:
          self.module_consts[target.id] = vals
    self.visit_body(tree, {}, {}, {})


def _constructs_other_class(value):
  """`Name(...)` / `mod.Name(...)` with a CapWords class name other than ConfigDict."""
  if not isinstance(value, ast.Call):
    return False
  f = value.func
  name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
  return name[:1].isupper() and name != "ConfigDict"


def _nested(node):
  """Functions, lambdas and classes directly inside `node`'s scope."""
  out = []
  stack = list(ast.iter_child_nodes(node))
  while stack:
    n = stack.pop()
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      out.append(n)
      continue
    stack.extend(ast.iter_child_nodes(n))
  return out


def _walk_scope(node):
  """Nodes of `node`'s own scope (not those of nested functions or classes)."""
  stack = list(ast.iter_child_nodes(node))
  while stack:
    n = stack.pop()
    yield n
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      continue
    stack.extend(ast.iter_child_nodes(n))


def scan_source(source, sections, path="<string>", not_config=()):
  s = _Scanner(sections, path, not_config)
  s.scan_module(ast.parse(source))
  return s.reads


def scan_package(root, sections, skip=(), not_config=None):
  not_config = not_config or {}
  reads = []
  root = pathlib.Path(root)
  for p in sorted(root.rglob("*.py")):
    rel = p.relative_to(root.parent).as_posix()
    if rel in skip:
      continue
    reads += scan_source(p.read_text(), sections, rel, not_config.get(rel, ()))
  return reads




def library_reads() -> list[Read]:
  reads = []
  for p in sorted(PACKAGE.rglob("*.py")):
    rel = p.relative_to(REPO).as_posix()
    if rel not in SCAN_SKIP:
      reads += scan_source(p.read_text(), SECTION_NAMES, rel, NOT_CONFIG.get(rel, ()))
  return [r for r in reads if (r.where.rsplit(":", 1)[0], r.dotted) not in FALSE_READS]


def not_in_schema(reads) -> list[str]:
  """'path:line section.key' for each read of a key the schema does not accept."""
  out = []
  for r in reads:
    allowed = set(C.SCHEMA) if r.section == ROOT else C.SCHEMA[r.section]
    if r.key not in allowed:
      out.append(f"{r.where} {r.dotted}")
  return out


def schema_keys() -> list[str]:
  return [name if keys is None else f"{name}.{k}"
          for name, keys in C.SCHEMA.items() for k in (sorted(keys) if keys else [None])]


@pytest.fixture(scope="module")
def reads():
  return library_reads()


# ============================================================================ (a) one schema
@pytest.mark.parametrize("name", SECTION_NAMES)
def test_schema_is_the_builders_keys(name):
  built = S.SECTIONS[name]()
  assert isinstance(built, mlc.ConfigDict)
  assert set(built.keys()) == C.SCHEMA[name]
  for key, choices in S.SECTION_ENUMS[name].items():
    assert key in built, f"enum {name}.{key} is not a key of {name}_section"
    assert C.ENUMS[f"{name}.{key}"] == choices
    assert built[key] in choices, f"default {name}.{key}={built[key]!r} not in {choices}"
  # A key named like a ConfigDict method would be shadowed: config.vae.items is a method.
  assert not set(built.keys()) & set(dir(mlc.ConfigDict))


def test_top_level_and_task_tables_agree_with_the_schema():
  assert {k for k, v in C.SCHEMA.items() if v is None} == set(S.TOP_LEVEL)
  assert set(C.SCHEMA) == set(S.TOP_LEVEL) | set(S.SECTIONS)
  assert set(S.TASK_SECTIONS) == set(S.TASK_TOP_LEVEL) == set(C.TASKS)
  for task in C.TASKS:
    assert set(S.TASK_SECTIONS[task]) <= set(S.SECTIONS)
    assert set(S.TASK_TOP_LEVEL[task]) <= set(S.TOP_LEVEL)
  assert C.ENUMS["rules"] == S.TOP_LEVEL_ENUMS["rules"]
  for dotted in C.RETIRED:
    section, key = dotted.split(".")
    assert key not in C.SCHEMA[section], f"{dotted} is retired but still in the schema"
  for dotted, value in C.BEFORE_KEY_EXISTED.items():
    section, key = dotted.split(".")
    assert key in C.SCHEMA[section]
    assert value in C.ENUMS.get(dotted, (value,))


def test_builders_refuse_unknown_keys_and_derive_channel_mult():
  with pytest.raises(TypeError, match=r"framez.*config\.data has .*frames"):
    C.data_section(framez=17)
  assert C.vae_section(spatial_compression=16).channel_mult == (1, 2, 4, 4, 4)
  assert C.vae_section(patch_size=4).channel_mult == (1, 2, 4)   # tc=4 needs two downsamples
  assert C.vae_section(patch_size=4, temporal_compression=1).channel_mult == (1, 2)
  assert C.vae_section(patch_size=4, channel_mult=(1, 2, 2)).channel_mult == (1, 2, 2)
  assert C.sample_section(objective="eps").sampler == "ddim"
  assert common.data_section is C.data_section  # configs/common re-exports the library's


CONFIGS = {
    "vae": lambda: vae.get_config(),
    "vae:runlocal": lambda: vae.get_config("runlocal"),
    "vae:args": lambda: vae.get_config("res=32x48,frames=9,comp=1x8x8,zch=4,patch=2,"
                                       "shortcut=false,opt=adamw,loss=l2,adv=0.1"),
    "t2v": lambda: t2v.get_config(),
    "t2v:runlocal": lambda: t2v.get_config("runlocal,res=32,frames=9"),
    "t2v:eps": lambda: t2v.get_config("objective=eps,variant=B,patch=2x2x2,comp=4x16x16,frames=13"),
    "t2v:v,B": lambda: t2v.get_config("objective=v,variant=B,res=64x112,frames=9"),
    "demo:vae": lambda: demo.get_config("stage=vae"),
    "demo:t2v": lambda: demo.get_config("stage=t2v"),
    "demo:t2v_shots": lambda: demo.get_config("stage=t2v_shots"),
    "demo:t2v_readout": lambda: demo.get_config("stage=t2v_readout"),
    "demo:t2v_prior": lambda: demo.get_config("stage=t2v_prior"),
    "demo:t2v_layout": lambda: demo.get_config("stage=t2v_layout"),
    "demo:t2v_detail": lambda: demo.get_config("stage=t2v_detail"),
    "demo:t2v_mix": lambda: demo.get_config("stage=t2v_mix"),
    "demo:vae_refiner": lambda: demo.get_config("stage=vae_refiner"),
    "demo:vae,runlocal": lambda: demo.get_config("stage=vae,runlocal"),
    "demo:t2v,runlocal": lambda: demo.get_config("stage=t2v,runlocal"),
    "dit_paper": lambda: dit_paper.get_config(),
    "dit_paper:B/4,runlocal": lambda: dit_paper.get_config("variant=B/4,runlocal"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_config_validates_with_exactly_the_schema_keys(name):
  c = CONFIGS[name]()
  C.validate(c, num_devices=4)
  task = c.task
  assert set(c.keys()) == set(S.TASK_TOP_LEVEL[task]) | set(S.TASK_SECTIONS[task])
  for section in S.TASK_SECTIONS[task]:
    assert set(c[section].keys()) == C.SCHEMA[section], section
  assert C.missing_keys(c) == []
  # Today's config is already complete: complete() changes nothing.
  assert C.complete(c).to_dict() == c.to_dict()


def test_runlocal_turns_on_periodic_evals():
  assert t2v.get_config().train.eval_every == 0
  assert t2v.get_config("runlocal").train.eval_every == 3
  assert vae.get_config("runlocal").train.eval_every == 3
  assert t2v.get_config().train.eval_num == 8


# ============================================================= (b) every key read is accepted
def test_every_key_the_library_reads_is_in_the_schema(reads):
  assert len(reads) > 100, "the scan found almost nothing: is it still looking at sora_jax/?"
  bad = not_in_schema(reads)
  assert not bad, ("library code reads config keys the schema rejects (add them to their "
                   "builder in sora_jax/config_sections.py, or fix the read):\n" + "\n".join(bad))


PLANTED = '''
import ml_collections as mlc

LEVELS = ("frames", "heigth")

def f(config, vae_cfg, cfg_name: str):
  d = config.data
  n = d.framez                              # planted: data.framez
  m = vae_cfg.get("scaling_factor", 1.0)    # planted: a retired key
  for k in ("width", "depthh"):             # planted: model.depthh (through a loop)
    _get(config.model, k, 0)
  for key in LEVELS:                        # planted: data.heigth (through a module tuple)
    d[key]
  stats = {}
  stats.get("bytes_limit")                  # not a config: never recorded
  if "objectiv" in config.diffusion:        # planted: diffusion.objectiv
    pass
  o, t = config.get("optim"), config.get("trian")   # planted: top-level trian
  return o.lrr, config.get("vae_workdir"), cfg_name.upper()   # planted: optim.lrr

class Task:
  fields: dict

  def __init__(self, config):
    self.cfg = config.sample
    self.config = config

  def g(self):
    c = self.config
    return self.cfg.stepz, c.seed, c.mesh.data   # planted: sample.stepz

class T5:
  cfg: "T5Config"

  def h(self):
    return self.cfg.d_model                     # a T5Config field, not a config key
'''


def test_the_scan_catches_planted_keys():
  got = scan_source(PLANTED, SECTION_NAMES, "planted.py")
  bad = {line.split(" ")[1] for line in not_in_schema(got)}
  assert bad == {"data.framez", "vae.scaling_factor", "model.depthh", "data.heigth",
                 "diffusion.objectiv", "trian", "optim.lrr", "sample.stepz"}
  found = {r.dotted for r in got}
  for ok in ("data", "model.width", "data.frames", "vae_workdir", "seed", "mesh.data",
             "sample", "optim"):
    assert ok in found
  assert not {r.key for r in got} & {"bytes_limit", "d_model", "upper", "fields"}


# =========================================================== (c) every accepted key is read
def test_every_schema_key_is_read_somewhere(reads):
  seen = {r.dotted for r in reads}
  unread = [k for k in schema_keys() if k not in seen and k not in UNREAD_OK]
  assert not unread, ("schema keys no library code reads (wire them, or remove them from their "
                      "builder and list them in config_sections.RETIRED):\n" + "\n".join(unread))
  stale = sorted(k for k in UNREAD_OK if k in seen)
  assert not stale, f"read now; remove from UNREAD_OK: {stale}"


# ================================================================ (d) older run directories
def _load(path) -> mlc.ConfigDict:
  with open(path) as f:
    return mlc.ConfigDict(json.load(f))


@pytest.mark.parametrize("stage", ["vae", "t2v"])
def test_shipped_demo_configs_complete_and_validate(stage):
  path = ASSETS / stage / "config.json"
  if not path.exists():
    pytest.skip(f"{path} is not in this checkout")
  old = _load(path)
  new = C.complete(old)
  assert C.missing_keys(new) == []
  C.validate(new, num_devices=1)
  for dotted in C.RETIRED:
    section, key = dotted.split(".")
    assert key not in new.get(section, {})
  # Values present are kept as they are.
  for section, value in old.items():
    if isinstance(value, mlc.ConfigDict):
      for key, v in value.items():
        if f"{section}.{key}" not in C.RETIRED:
          assert new[section][key] == v, f"{section}.{key}"
    else:
      assert new[section] == value


def test_complete_fills_a_config_json_missing_keys(tmp_path):
  c = t2v.get_config("runlocal,objective=eps")
  raw = json.loads(c.to_json())
  for dotted in ("diffusion.base_shift", "diffusion.max_shift", "model.rope_theta",
                 "sample.timestep_spacing", "sample.sampler", "train.eval_every",
                 "train.eval_num", "vae.shortcut_layout", "vae.mid_attention", "data.eval_split"):
    section, key = dotted.split(".")
    del raw[section][key]
  del raw["mesh"]
  del raw["seed"]
  raw["sample"]["steps_per_chunk"] = 2      # retired keys of older runs
  raw["vae"]["scaling_factor"] = 1.0
  raw["data"]["shuffle_seed"] = 0
  (tmp_path / "config.json").write_text(json.dumps(raw))
  old = _load(tmp_path / "config.json")
  with pytest.raises(C.ConfigError, match=r"is not a known key"):
    C.validate(old, num_devices=1)   # as loaded, the retired keys fail validation

  new = C.complete(old)
  assert C.missing_keys(new) == []
  C.validate(new, num_devices=1)
  assert (new.diffusion.base_shift, new.diffusion.max_shift) == (1.0, None)
  assert new.model.rope_theta == 10000.0
  assert new.sample.timestep_spacing == "trailing"
  assert new.sample.sampler == "ddim"            # the default for the run's objective (eps)
  assert (new.train.eval_every, new.train.eval_num) == (0, 8)
  assert new.vae.shortcut_layout == "subpixel"   # before the key existed, not today's default
  assert new.vae.mid_attention is False and new.data.eval_split == "test"
  assert new.mesh.to_dict() == C.mesh_section().to_dict() and new.seed == 0
  assert "steps_per_chunk" not in new.sample and "scaling_factor" not in new.vae
  assert new.train.steps == c.train.steps and new.sample.steps == c.sample.steps
  assert not new.is_locked and C.complete(new).to_dict() == new.to_dict()
  assert C.complete(old.lock()).is_locked
  # A plain dict (the parsed json) works too.
  assert C.complete(raw).to_dict() == new.to_dict()


def test_complete_needs_the_task_and_keeps_unknown_keys_for_validate():
  with pytest.raises(C.ConfigError, match="config.task"):
    C.complete({"data": {}})
  c = json.loads(vae.get_config("runlocal").to_json())
  c["data"]["framez"] = 3
  with pytest.raises(C.ConfigError, match=r"config\.data\.framez is not a known key"):
    C.validate(C.complete(c), num_devices=1)

"""Compile time and per-device memory of the DiT train step on 8 (fake) devices, for S and XL
at 4k, 16k and 64k tokens, with and without context (sequence) parallelism.

  python benchmarks/scaling.py [--variants S,XL] [--tokens 4096,16384,65536] [--batch 2]

Nothing runs: each step is lowered from abstract, sharded inputs and compiled ahead of time, and
XLA's `memory_analysis()` gives arguments + temporaries per device. Meshes (data, fsdp, tensor,
context): without CP (1, 2, 4, 1) — FSDP x tensor parallel; with CP (1, 2, 1, 4) and ring attention.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections as mlc  # noqa: E402

from configs import t2v as t2v_config  # noqa: E402
from sora_jax.diffusion.objective import make_objective  # noqa: E402
from sora_jax.models import dit as dit_lib  # noqa: E402
from sora_jax.parallel import mesh as mesh_lib  # noqa: E402
from sora_jax.parallel import rules as rules_lib  # noqa: E402
from sora_jax.train import optimizer as optim_lib  # noqa: E402
from sora_jax.train import state as state_lib  # noqa: E402
from sora_jax.train import steps as steps_lib  # noqa: E402

from _latent_task import LatentT2VTask  # noqa: E402

LATENT_FOR_TOKENS = {4096: (16, 32, 32), 16384: (16, 64, 64), 65536: (64, 64, 64)}


def compile_step(variant: str, tokens: int, batch: int, context: bool, ctx_len=64,
                 text_width=256, channels=16):
  cfg = t2v_config.get_config(f"variant={variant},patch=1x2x2").unlock()
  cfg.model.attention_impl = "ring" if context else "xla"
  mesh_cfg = mlc.ConfigDict(dict(data=1, fsdp=2, tensor=1 if context else 4,
                                 context=4 if context else 1))
  mesh = mesh_lib.make_mesh(mesh_cfg)
  rules = rules_lib.rules_for("dit")
  t, h, w = LATENT_FOR_TOKENS[tokens]
  model = dit_lib.dit_from_config(cfg.model, in_channels=channels, text_width=text_width)
  task = LatentT2VTask(model, make_objective(cfg.diffusion), tokens)
  batch_sh = rules_lib.batch_sharding(mesh)
  data = {"latents": jax.ShapeDtypeStruct((batch, t, h, w, channels), jnp.float32,
                                          sharding=batch_sh),
          "context": jax.ShapeDtypeStruct((batch, ctx_len, text_width), jnp.float32,
                                          sharding=batch_sh),
          "mask": jax.ShapeDtypeStruct((batch, ctx_len), jnp.bool_, sharding=batch_sh)}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    tx, sched = optim_lib.make_optimizer(cfg.optim, 1000,
                                         jax.eval_shape(task.init, jax.random.key(0), data))
    boxed = jax.eval_shape(state_lib.make_init_fn(task, tx), jax.random.key(0), data)
    shardings = rules_lib.state_shardings(boxed, mesh, rules)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         state_lib.unbox(boxed, apply_constraint=False), shardings)
    rep = rules_lib.replicated(mesh)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    step = steps_lib.make_train_step(task, tx, sched, 0.999)
    t0 = time.perf_counter()
    _, compiled = steps_lib.compile_train_step(
        step, state, data, rng, state_shardings=shardings,
        batch_shardings=jax.tree.map(lambda x: x.sharding, data), replicated=rep)
    seconds = time.perf_counter() - t0
  facts = steps_lib.compiled_facts(compiled)
  return dict(params=state_lib.param_count(boxed.params), compile_s=seconds,
              args_gib=facts.get("argument_size_in_bytes", 0) / 2**30,
              temp_gib=facts.get("temp_size_in_bytes", 0) / 2**30,
              mesh=dict(mesh.shape))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", default="S,XL")
  ap.add_argument("--tokens", default="4096,16384,65536")
  ap.add_argument("--batch", type=int, default=2)
  a = ap.parse_args()
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}; global batch {a.batch}; "
        f"f32 params + AdamW; per-device memory from memory_analysis()")
  print("model | tokens | context parallel | mesh (d,f,t,c) | params | compile s | "
        "args GiB/dev | temp GiB/dev")
  for variant in a.variants.split(","):
    for tokens in (int(x) for x in a.tokens.split(",")):
      for cp in (False, True):
        r = compile_step(variant, tokens, a.batch, cp)
        m = r["mesh"]
        print(f"{variant} | {tokens} | {'ring x4' if cp else 'no'} | "
              f"({m['data']},{m['fsdp']},{m['tensor']},{m['context']}) | {r['params']:,} | "
              f"{r['compile_s']:.1f} | {r['args_gib']:.2f} | {r['temp_gib']:.2f}", flush=True)


if __name__ == "__main__":
  main()

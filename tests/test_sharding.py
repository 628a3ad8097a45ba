"""Data parallelism of the encoder rankers: 1 vs 2 vs 4 devices, 1 vs 2 processes, shardings.

Each device count runs in its own subprocess (the forced host device count is
fixed when jax starts). A worker builds the tiny cell-level and pointwise
rankers, one fixed global batch, and runs two `jaxrank.loop.jit_step` steps
under `jax.jit` with the batch sharded over the "data" mesh axis; it prints the
two losses (the second one sees the all-reduced gradients of the first).
Dropout is on, with threefry keys (partitionable: the same masks whatever the
sharding).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrank import loop, train
from jaxrank.data import batching
from jaxrank.data.notebooks import sample_data_dir
from jaxrank.data import notebooks as nb_io
from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, sys
import numpy as np
import jax
if os.environ.get("JAXRANK_COORDINATOR"):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
from experiments import common
common.setup_jax()
import functools
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxrank import loop, train
from jaxrank.models import rankers

def batch(kind):
  rng = np.random.default_rng(0)
  B, C, E, T = 4, 8, 16, 12
  n_code = np.array([3, 5, 2, 4], np.int32)
  is_code = np.arange(C)[None] < n_code[:, None]
  n_cells = np.array([6, 8, 5, 7])
  mask = np.arange(C)[None] < n_cells[:, None]
  code_pos = np.where(is_code, (np.arange(C)[None] + 1) / (n_code[:, None] + 1), 0).astype(np.float32)
  gap = np.where(mask & ~is_code, rng.integers(0, n_code[:, None] + 1, (B, C)), -1).astype(np.int32)
  key = rng.random((B, C)).astype(np.float32)
  out = dict(is_code=is_code, cell_mask=mask, code_pos=code_pos, n_code=n_code,
             target_gap=gap, target_key=key, cell_index=np.tile(np.arange(C, dtype=np.int32), (B, 1)))
  if kind == "cells":
    v = rng.normal(size=(B, C, E)).astype(np.float16)
    u = v.astype(np.float32) / np.linalg.norm(v.astype(np.float32), axis=-1, keepdims=True)
    out.update(vec=v, sim=np.einsum("bce,bke->bck", u, u).astype(np.float16))
  else:
    tok = rng.integers(5, 50, (B, C, T)).astype(np.int32)
    tok[:, :, 0] = 0
    tok[:, :, 9:] = 1  # pad
    out.update(tokens=tok)
  return out

optim = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=1, final_lr_fraction=0.1,
    weight_decay=0.01, b1=0.9, b2=0.999, clip_norm=1.0, grad_accum=1))
res = {"devices": jax.device_count(), "processes": jax.process_count()}
for kind in ("cells", "pointwise"):
  if kind == "cells":
    cfg = rankers.CellsConfig(vocab_size=16, hidden_dim=32, num_layers=1, num_heads=2, dropout=0.1)
  else:
    cfg = rankers.PointwiseConfig(vocab_size=50, encoder_name="", enc_hidden=32, enc_layers=1, enc_heads=2,
                                  md_tokens=6, code_cells=3, code_tokens=3, hidden_dim=16,
                                  enc_dropout=0.1, dropout=0.1)
  family = train.Family(rankers, cfg)
  tx, schedule = loop.make_optimizer(optim, 10)
  mesh = loop.make_mesh()
  b = batch(kind)
  state, state_sh = train.create_state(family, tx, b, 0, mesh)
  step = loop.jit_step(train.loss_of(family), schedule, state_sh, mesh)
  rng = jax.random.key(0)
  losses = []
  for _ in range(2):
    arrays = loop.shard_batch(b, mesh)
    state, aux = step(state, arrays, rng)
    losses.append(float(np.asarray(aux["loss"].addressable_data(0))))
  res[kind] = losses
print("RESULT " + json.dumps(res), flush=True)
"""


def _env(n_devices: int, **extra) -> dict[str, str]:
  env = subprocess_env(n_devices)
  for k in ("JAXRANK_COORDINATOR", "JAXRANK_NUM_PROCESSES", "JAXRANK_PROCESS_ID"):
    env.pop(k, None)
  env.update(extra)
  return env


def _result(stdout: str) -> dict:
  line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
  assert line, stdout
  return json.loads(line[-1][len("RESULT "):])


def _run(n_devices: int) -> dict:
  p = subprocess.run([sys.executable, "-c", WORKER], cwd=REPO, env=_env(n_devices),
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  return _result(p.stdout)


@pytest.fixture(scope="module")
def one_device() -> dict:
  return _run(1)


@pytest.mark.parametrize("n", [2, 4])
def test_sharding_loss_on_n_devices_equals_one_device(one_device, n):
  got = _run(n)
  assert got["devices"] == n and one_device["devices"] == 1
  for kind in ("cells", "pointwise"):
    assert np.all(np.isfinite(got[kind]))
    np.testing.assert_allclose(got[kind], one_device[kind], rtol=0, atol=1e-5, err_msg=kind)
  # The second step moved: the update (all-reduced gradients) did something.
  assert one_device["cells"][0] != one_device["cells"][1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_distributed_two_processes_equal_one_process(one_device):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", WORKER], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=_env(1, JAXRANK_COORDINATOR=f"127.0.0.1:{port}", JAXRANK_NUM_PROCESSES="2",
                          JAXRANK_PROCESS_ID=str(i))) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=900)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append(_result(out))
  for r in outs:
    assert r["processes"] == 2 and r["devices"] == 2
    for kind in ("cells", "pointwise"):
      np.testing.assert_allclose(r[kind], one_device[kind], rtol=0, atol=1e-5, err_msg=kind)


def test_sharding_of_a_batch_is_what_the_mesh_says():
  mesh = loop.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count() == 2
  nbs = nb_io.load_split(sample_data_dir(), "train")[:6]
  items = [batching.notebook_arrays(nb, {"vec": np.ones((nb.n_cells, 4), np.float16)}) for nb in nbs]
  b = batching.eval_batches(items, buckets=(1024,), cells_per_batch=4096, row_multiple=2)[0]
  arrays = loop.shard_batch(b.arrays, mesh)
  rows = b.arrays["vec"].shape[0]
  for k, x in arrays.items():
    assert x.sharding.spec == jax.sharding.PartitionSpec("data"), k
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape[0] for s in shards] == [rows // 2] * 2, k
    assert {s.device for s in shards} == set(jax.devices())
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]),
                                  b.arrays[k])

"""benchmarks/gpu_check.sh --smoke: the GPU check runs end to end on CPU with only
what the GPU image has (jaxrank's other dependencies are made unimportable)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
# Installed here but not in the GPU image (python3 + jax/flax/optax/orbax/torch/transformers).
NOT_IN_GPU_IMAGE = ("ml_collections", "pandas", "pyarrow", "sklearn", "matplotlib", "xgboost")

_BLOCKER = f'''
import importlib.abc, sys
class _NotInImage(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {NOT_IN_GPU_IMAGE!r}:
      raise ImportError(f"{{name}} is not in the GPU image")
    return None
sys.meta_path.insert(0, _NotInImage())
'''


def test_gpu_check_smoke_runs_with_the_gpu_images_packages_only(tmp_path):
  (tmp_path / "sitecustomize.py").write_text(_BLOCKER)
  env = subprocess_env(devices=None, PYTHON=sys.executable, GPU_CHECK_TIMEOUT="900")
  env["PYTHONPATH"] = str(tmp_path)  # the script prepends the repo itself
  p = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=1000)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  lines = p.stdout.strip().splitlines()
  checks = {d["check"]: d for d in (json.loads(l) for l in lines if l.startswith("{"))}
  assert set(checks) == {"environment", "encoder_train", "encode", "cells_ranker"}, lines
  assert all("error" not in c for c in checks.values()), checks
  assert checks["encoder_train"]["ours_bfloat16_seq_per_s"] > 0
  assert checks["encode"]["ours_float32_cells_per_s"] > 0
  ranker = checks["cells_ranker"]
  assert ranker["steps_per_s"] > 0 and ranker["peak_host_rss_mib"] > 0
  assert ranker["shapes"] >= 1 and abs(ranker["final_loss"]) < 1e6
  assert lines[-1].startswith("gpu_check device=") and "ranker_steps_per_s=" in lines[-1]
  # The blocker was in force: the script never needed those packages.
  probe = subprocess.run([sys.executable, "-c", "import sklearn"], env=env,
                         capture_output=True, text=True)
  assert probe.returncode != 0 and "not in the GPU image" in probe.stderr

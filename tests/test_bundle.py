"""Kaggle submission bundles (experiments.bundle, jaxrank/bundle.py): real runs, real pip.

The suite test packs an ensemble run (a BOW-MLP run and a cells ranker on a
stored encoder's vectors) with jaxrank's own wheel only (`--nowith_deps`; pip
builds it, fetching setuptools from PyPI or pip's cache), deletes the original
workspace, and runs B/predict.py with this interpreter from another folder,
PYTHONPATH unset: the submission must equal `experiments.predict`'s, byte for
byte, and the bundle must be left unchanged.

The slow test (`pytest -m slow tests/test_bundle.py`: 13 min on 2 cores at load
~8, 3 min of CPU; it downloads ~290 MB of wheels unless JAXRANK_TEST_WHEELHOUSE
names a wheelhouse, and installs them in a new venv) packs
every wheel and runs the bundle's own notebook code: a fresh virtual
environment from B/wheels alone (`pip install --no-index`), then predict.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jaxrank import bundle, ensemble, results, store, train
from jaxrank.data.notebooks import sample_data_dir
from tests.conftest import subprocess_env
from tests.test_rankers import tiny_cells_config
from tests.test_roberta import tiny_store_workspace
from tests.tiny import tiny_bow_config

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict[str, str]:
  """A subprocess environment with neither the repo on PYTHONPATH nor $JAXRANK_HOME:
  what a script finds comes from the installed packages and its own folder."""
  env = subprocess_env(devices=1, **{k: v for k, v in extra.items() if v is not None})
  unset = {"PYTHONPATH", "JAXRANK_HOME"} | {k for k, v in extra.items() if v is None}
  return {k: v for k, v in env.items() if k not in unset}


def _run(cmd, cwd, timeout=900, **extra):
  p = subprocess.run(cmd, cwd=cwd, env=_env(**extra), capture_output=True, text=True,
                     timeout=timeout)
  assert p.returncode == 0, f"{cmd[:3]} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}"
  return p


def _tree_digest(folder: Path) -> dict[str, str]:
  return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """WS/runs/{bow,cells} and the ensemble run WS/runs/ens; the reference submission."""
  root = tmp_path_factory.mktemp("bundle")
  ws = tiny_store_workspace(root)
  train.train_and_evaluate(tiny_bow_config(), ws.runs_dir / "bow")
  cells = tiny_cells_config(ws, **{"train.steps": 2, "data.buckets": (128, 1024)})
  train.train_and_evaluate(cells, ws.runs_dir / "cells")
  ensemble.write_ensemble_run(ws.runs_dir / "ens", [ws.runs_dir / "bow", ws.runs_dir / "cells"])
  want = root / "want.csv"
  _run([sys.executable, "-m", "experiments.predict", f"--workdir={ws.runs_dir / 'ens'}",
        f"--data_dir={sample_data_dir()}", "--split=test", f"--output={want}"], cwd=ROOT)
  return root, ws, want


def test_bundle_predicts_like_experiments_predict_from_its_own_folder(trained):
  root, ws, want = trained
  out = root / "B"
  p = _run([sys.executable, "-m", "experiments.bundle", f"--workdir={ws.runs_dir / 'ens'}",
            f"--out={out}", "--nowith_deps"], cwd=ROOT)
  assert "2 run(s), 1 store entries" in p.stdout

  # Layout: the two member runs, each with exactly one checkpoint step; the store model.
  manifest = json.loads((out / "bundle.json").read_text())
  assert [m["run"] for m in manifest["members"]] == ["runs/bow", "runs/cells"]
  assert [(e["kind"], e["name"]) for e in manifest["store"]] == [("model", "tiny")]
  store.verify(store.Workspace(out / "workspace"), "tiny")  # every file's sha256
  for m in manifest["members"]:
    run = out / "workspace" / m["run"]
    steps = [s for d in bundle.CHECKPOINT_DIRS for s in (run / d).glob("*") if s.name.isdigit()]
    assert len(steps) == 1 and (run / "featurizer").is_dir() and (run / "config.json").is_file()
  # Nothing in the bundle points back into the workspace it came from.
  for path in (out / "workspace" / "runs").rglob("*.json"):
    assert str(ws.root) not in path.read_text(), path
  feat = json.loads((out / "workspace/runs/cells/featurizer/encoder_features.json").read_text())
  assert feat["workspace"] == "$WORKSPACE"
  assert feat["cache_dir"] == "$WORKSPACE/data/encoder_cache"
  # The wheel carries the library, the entry points and this very predict script.
  wheels = sorted((out / "wheels").glob("*.whl"))
  assert [w.name for w in wheels] == ["jaxrank-0.1.0-py3-none-any.whl"]
  names = zipfile.ZipFile(wheels[0]).namelist()
  assert {"jaxrank/bundle.py", "experiments/predict.py", "experiments/predict_bundle.py",
          "jaxrank/data/sample/train_orders.csv"} <= set(names)
  assert (out / "predict.py").read_bytes() == (ROOT / "experiments/predict_bundle.py").read_bytes()
  nb = json.loads((out / "submit.ipynb").read_text())
  code = "".join(c["source"] for c in nb["cells"] if c["cell_type"] == "code")
  assert '"--no-index"' in code and "predict.py" in code
  compile(code, "submit.ipynb", "exec")

  # The original workspace is gone; predict from the bundle alone, elsewhere.
  shutil.move(ws.root, root / "ws-moved")
  try:
    before = _tree_digest(out)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    _run([sys.executable, str(out / "predict.py"), f"--data_dir={sample_data_dir()}",
          "--split=test", f"--scratch={root / 'scratch'}"], cwd=elsewhere)
    assert (elsewhere / "submission.csv").read_bytes() == want.read_bytes()
    assert _tree_digest(out) == before  # the bundle (read-only on Kaggle) was not written to
    assert any((root / "scratch/data/encoder_cache/tiny").rglob("shard-*.npz"))  # computed there
  finally:
    shutil.move(root / "ws-moved", ws.root)


def test_bundle_refuses_an_existing_folder_and_a_run_without_its_store_model(trained, tmp_path):
  root, ws, _ = trained
  (tmp_path / "B").mkdir()
  p = subprocess.run([sys.executable, "-m", "experiments.bundle",
                      f"--workdir={ws.runs_dir / 'bow'}", f"--out={tmp_path / 'B'}"], cwd=ROOT,
                     env=_env(), capture_output=True, text=True, timeout=300)
  assert p.returncode != 0 and "exists" in p.stderr
  # A copy of the cells run in a workspace without the model it names.
  other = store.Workspace(tmp_path / "other").ensure()
  shutil.copytree(ws.runs_dir / "cells", other.runs_dir / "cells")
  for path in (other.runs_dir / "cells").rglob("*.json"):
    path.write_text(path.read_text().replace(str(ws.root), str(other.root)))
  with pytest.raises(bundle.BundleError, match="names store model 'tiny'"):
    bundle.pack(str(other.runs_dir / "cells"), tmp_path / "B2")
  # A run whose checkpoint is damaged: one line naming it, and no bundle.
  damaged = tmp_path / "ws3" / "runs" / "bow"
  shutil.copytree(ws.runs_dir / "bow", damaged)
  sub, step = results.checkpoint_to_copy(damaged)
  for f in (step / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0" * 7)
  p = subprocess.run([sys.executable, "-m", "experiments.bundle", f"--workdir={damaged}",
                      f"--out={tmp_path / 'B3'}"], cwd=ROOT, env=_env(), capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 1, p.stderr
  err = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
  assert len(err) == 1 and f"run {damaged}: its checkpoint {sub}/{step.name} does not restore" \
      in err[0], p.stderr[-2000:]
  assert "Traceback" not in p.stderr and not (tmp_path / "B3").exists()


@pytest.mark.slow
def test_fresh_venv_from_the_bundle_alone_runs_the_notebook(trained):
  """The whole Kaggle path: every wheel; the notebook's code in a bare interpreter."""
  root, ws, want = trained
  out = root / "B-full"
  wheelhouse = os.environ.get("JAXRANK_TEST_WHEELHOUSE")
  _run([sys.executable, "-m", "experiments.bundle", f"--workdir={ws.runs_dir / 'ens'}",
        f"--out={out}", *([f"--wheelhouse={wheelhouse}"] if wheelhouse else [])], cwd=ROOT,
       timeout=1800)
  nb = json.loads((out / "submit.ipynb").read_text())
  code = "".join(c["source"] for c in nb["cells"] if c["cell_type"] == "code")
  working = root / "kaggle-working"
  working.mkdir()
  shutil.move(ws.root, root / "ws-moved")
  try:
    # The base interpreter (not this venv's), as a Kaggle kernel has its own.
    python = getattr(sys, "_base_executable", sys.executable)
    _run([python, "-c", code], cwd=working, timeout=1800, JAXRANK_BUNDLE=str(out),
         AI4CODE_DATA=str(sample_data_dir()), JAXRANK_VENV=str(root / "venv"),
         PIP_NO_INDEX="1", PIP_FIND_LINKS=None, PIP_CONFIG_FILE=os.devnull)
    assert (working / "submission.csv").read_bytes() == want.read_bytes()
  finally:
    shutil.move(root / "ws-moved", ws.root)

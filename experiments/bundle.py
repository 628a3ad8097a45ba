r"""Packs trained runs into one folder to upload as a Kaggle dataset (offline submission).

  python -m experiments.bundle --workdir=workspace/runs/best --out=bundle [--python=3.12]
      [--wheelhouse=/shared/wheelhouse] [--nowith_deps]

--workdir: one run, several (A,B,C: an ensemble) or an ensemble run folder, as
`experiments.predict` takes them. The bundle (layout: jaxrank/bundle.py) holds
the runs with their featurizers and one checkpoint each, the store models and
tokenizers they name, `wheels/` (jaxrank's own wheel and every pinned
dependency for --python, Linux --arch, glibc >= --glibc; downloaded by
launch/make_wheelhouse.sh, or taken offline from --wheelhouse), `predict.py`
and the notebook `submit.ipynb`. Then, anywhere, offline:

  pip install --no-index --find-links=bundle/wheels jaxrank
  python bundle/predict.py --data_dir=D --split=test --output=submission.csv

The folder is built beside --out and renamed into place when complete.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder, ensemble run folder, or several "
                               "runs A,B,C (an ensemble).", required=True)
_OUT = flags.DEFINE_string("out", None, "Bundle folder to create (must not exist).",
                           required=True)
_PYTHON = flags.DEFINE_string("python", f"{sys.version_info[0]}.{sys.version_info[1]}",
                              "Python (major.minor) of the notebook that installs the wheels.")
_WHEELHOUSE = flags.DEFINE_string("wheelhouse", None, "Take the wheels offline from this "
                                  "wheelhouse (launch/make_wheelhouse.sh) instead of PyPI.")
_WITH_DEPS = flags.DEFINE_bool("with_deps", True, "Also every dependency's wheel; "
                               "--nowith_deps: only jaxrank's own (the others come from "
                               "another attached dataset).")
_GLIBC = flags.DEFINE_string("glibc", "2.28", "Oldest glibc of the target (Kaggle's is newer).")
_ARCH = flags.DEFINE_string("arch", "x86_64", "Target CPU architecture.")

NOTEBOOK_CODE = r'''import glob, json, os, subprocess, sys
# The attached bundle dataset (the folder holding bundle.json) and the competition data.
BUNDLE = os.environ.get("JAXRANK_BUNDLE") or os.path.dirname(
    sorted(glob.glob("/kaggle/input/**/bundle.json", recursive=True))[0])
DATA = os.environ.get("AI4CODE_DATA", "/kaggle/input/AI4Code")
VENV = os.environ.get("JAXRANK_VENV", "/tmp/jaxrank-venv")
want = json.load(open(os.path.join(BUNDLE, "bundle.json")))["python"]
if "%d.%d" % sys.version_info[:2] != want:
    sys.exit(f"this notebook runs Python {sys.version.split()[0]}; the bundle's wheels are for "
             f"{want}: rebuild it with python -m experiments.bundle --python=...")
def sh(*cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
# A virtual environment from the bundle's wheels alone (no internet).
sh(sys.executable, "-m", "venv", VENV)
sh(f"{VENV}/bin/pip", "install", "--quiet", "--no-index",
   f"--find-links={BUNDLE}/wheels", "jaxrank")
sh(f"{VENV}/bin/python", f"{BUNDLE}/predict.py", f"--data_dir={DATA}", "--split=test",
   "--output=submission.csv")
'''


def notebook() -> dict:
  """submit.ipynb: the commands above as one cell (a Kaggle notebook, internet off)."""
  intro = ("# jaxrank submission\n\nAttach the bundle dataset (made by `python -m "
           "experiments.bundle`) and the AI4Code competition data, turn the internet off, "
           "run all. Writes `submission.csv`.")
  return {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"},
                       "language_info": {"name": "python"}},
          "cells": [{"cell_type": "markdown", "id": "intro", "metadata": {}, "source": intro},
                    {"cell_type": "code", "id": "predict", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": NOTEBOOK_CODE}]}


def _source_root() -> Path:
  import jaxrank
  root = Path(jaxrank.__file__).resolve().parent.parent
  if not (root / "pyproject.toml").is_file() or not (root / "launch").is_dir():
    raise app.UsageError(f"jaxrank at {root} is not a source checkout: run "
                         "experiments.bundle from one (pip install -e .)")
  return root


def _run(cmd, env=None, what=""):
  p = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if p.returncode:
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
    raise app.UsageError(f"{what} failed ({p.returncode}):\n{tail}")
  return p


def build_wheels(dest: Path) -> None:
  """Dependencies via launch/make_wheelhouse.sh (pins from pyproject.toml; offline from
  --wheelhouse through PIP_NO_INDEX/PIP_FIND_LINKS), then jaxrank's own wheel."""
  src = _source_root()
  dest.mkdir(parents=True, exist_ok=True)
  offline = {}
  if _WHEELHOUSE.value:
    if not Path(_WHEELHOUSE.value).is_dir():
      raise app.UsageError(f"--wheelhouse={_WHEELHOUSE.value} is not a folder")
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(Path(_WHEELHOUSE.value).absolute())}
  if _WITH_DEPS.value:
    env = dict(os.environ, PYTHON_VERSION=_PYTHON.value, GLIBC=_GLIBC.value, ARCH=_ARCH.value,
               MODELS="0", PIP=f"{sys.executable} -m pip", **offline)
    _run(["bash", str(src / "launch" / "make_wheelhouse.sh"), str(dest)], env,
         f"collecting the wheels for Python {_PYTHON.value}")
  # Built from a clean copy of the sources: an in-tree build/ could add stale modules.
  with tempfile.TemporaryDirectory() as tmp:
    copy = Path(tmp) / "jaxrank-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("jaxrank", "experiments"):
      shutil.copytree(src / name, copy / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
      shutil.copyfile(src / name, copy / name)
    find = [f"--find-links={dest}"] + (
        ["--no-index", f"--find-links={offline['PIP_FIND_LINKS']}"] if offline else [])
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *find, "-w", str(dest),
          str(copy)], dict(os.environ, PIP_NO_INDEX="1") if offline else None,
         "building jaxrank's wheel")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxrank import bundle, io_utils, results

  out = Path(_OUT.value).absolute()
  if out.exists():
    raise app.UsageError(f"--out={out} exists: remove it or choose another folder")
  with io_utils.atomic_dir(out) as tmp:
    try:
      manifest = bundle.pack(_WORKDIR.value, tmp, code=results.code_version(),
                             python=_PYTHON.value,
                             wheels={"deps": _WITH_DEPS.value, "from": _WHEELHOUSE.value or "PyPI",
                                     "glibc": _GLIBC.value, "arch": _ARCH.value})
    except ValueError as e:  # also: no run named, an ensemble that contains itself
      raise bundle.BundleError(str(e)) from None  # one line (common.run)
    shutil.copyfile(Path(__file__).with_name("predict_bundle.py"), tmp / "predict.py")
    io_utils.atomic_write_text(tmp / "submit.ipynb", json.dumps(notebook(), indent=1) + "\n")
    build_wheels(tmp / bundle.WHEELS)
  n_wheels = len(list((out / bundle.WHEELS).glob("*.whl")))
  size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
  print(f"bundle {out}: {len(manifest['members'])} run(s), {len(manifest['store'])} store "
        f"entries, {n_wheels} wheels for Python {_PYTHON.value}, {size:.0f} MiB. Upload the "
        "folder as a Kaggle dataset and run its submit.ipynb (README: Kaggle submission).")


if __name__ == "__main__":
  common.run(main)

r"""A bundle's predict.py (`experiments.bundle` copies this file into it).

  pip install --no-index --find-links=B/wheels jaxrank     # once, offline
  python B/predict.py --data_dir=/kaggle/input/AI4Code --split=test --output=submission.csv

Predicts with the runs packed in the bundle (one run, or an ensemble decoded as
`experiments.predict` does), reading everything from the bundle's own folder,
which may be read-only: a writable workspace is built in --scratch (default: a
fresh temporary folder) whose models and checkpoints link into the bundle
(jaxrank.bundle.materialize). Offline: HF_HUB_OFFLINE=1. Takes the flags of
`experiments.predict` except --workdir; from a source checkout it also runs as
`python -m experiments.predict_bundle --bundle=B ...`.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
  from absl import app, flags, logging
  from experiments import common, predict
except ImportError as e:
  sys.exit(f"{e}: install the bundle's wheels first: pip install --no-index "
           f"--find-links={Path(__file__).resolve().parent / 'wheels'} jaxrank")

_BUNDLE = flags.DEFINE_string("bundle", None, "Bundle folder (default: this script's folder "
                              "when it holds bundle.json).")
_SCRATCH = flags.DEFINE_string("scratch", None, "Writable folder for the working workspace "
                               "(vector caches; reused when given). Default: a temp folder.")
flags.FLAGS.set_default("output", "submission.csv")


def main(argv):
  del argv
  from jaxrank import bundle, results

  if flags.FLAGS.workdir:
    raise app.UsageError("the bundle names its runs: no --workdir")
  here = Path(__file__).resolve().parent
  folder = Path(_BUNDLE.value) if _BUNDLE.value else here
  if not (folder / bundle.BUNDLE_FILE).is_file() and not _BUNDLE.value:
    raise app.UsageError(f"{here} holds no {bundle.BUNDLE_FILE}: pass --bundle=B")
  manifest = bundle.read(folder)  # BundleError: one line (common.run)
  want = (manifest.get("code") or {}).get("source_sha256")
  have = results.code_version()["source_sha256"]
  if want and want != have:
    logging.warning("the installed jaxrank (source %s) is not the one this bundle was made "
                    "with (%s): reinstall from %s/wheels", have[:12], want[:12], folder)
  scratch = _SCRATCH.value or tempfile.mkdtemp(prefix="jaxrank-bundle-")
  spec = bundle.materialize(folder, scratch)
  logging.info("bundle %s: %d run(s), working workspace %s", folder, len(manifest["members"]),
               scratch)
  predict.write(spec)


if __name__ == "__main__":
  common.run(main)

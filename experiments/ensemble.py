r"""Makes an ensemble run: a run folder that predicts with several trained runs.

  python -m experiments.ensemble --name=best --members=runs/best-m0,runs/best-m1 [--workspace=W]

writes W/runs/NAME/ensemble.json (member paths relative to it; a relative
member path that does not exist from the current folder is taken from W). `experiments.predict` and
`experiments.evaluate` accept --workdir=W/runs/NAME like a single run, and
combine the members' gap distributions / keys before decoding (jaxrank/ensemble.py).
"""

from pathlib import Path

from absl import app, flags

from experiments import common

_NAME = flags.DEFINE_string("name", None, "Ensemble run name: WORKSPACE/runs/NAME.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Ensemble run folder (instead of --name).")
_MEMBERS = flags.DEFINE_list("members", None, "Member run folders (or ensemble runs).",
                             required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxrank import ensemble

  if bool(_NAME.value) == bool(_WORKDIR.value):
    raise app.UsageError("give exactly one of --name and --workdir")
  ws = common.workspace_root()
  folder = Path(_WORKDIR.value) if _WORKDIR.value else ws / "runs" / _NAME.value
  # A relative member path: from here if it exists, else from the workspace.
  members = [m if Path(m).exists() else ws / m for m in _MEMBERS.value]
  try:
    path = ensemble.write_ensemble_run(folder, members)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  print(f"ensemble run {folder} ({len(members)} members): {path}")


if __name__ == "__main__":
  common.run(main)

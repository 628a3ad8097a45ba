"""A team workspace: a second, real Unix user of the same group uses a teammate's work.

BUILD.md's recipe: a group-owned setgid workspace, everyone with a umask that
leaves the group its bits. Here the umask is 007, so "others" get nothing and
every access the teammate makes goes through the group. The owner trains a run
and imports a store model; the teammate (a real user made with groupadd/useradd,
run through runuser) lists and verifies the store, writes the results table,
predicts from the owner's run by --name and resumes it with a longer schedule
(refused until --allow_config_change, which run.json records). Every file and
folder either of them wrote is group-owned, group-readable and -writable.

Needs root (to create the user; CI runs as root). Skipped otherwise, saying so.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from jaxrank import hf, store, submission
from jaxrank.data import notebooks
from tests.conftest import FAST_XLA
from tests.slurm_cluster import tiny_train_flagfile
from tests.test_roberta import make_tiny_bert_folder

ROOT = Path(__file__).resolve().parents[1]
GROUP, MATE = "jaxrankteam", "jaxrankmate"
UMASK = 0o007

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"),
    reason="needs root and useradd/runuser to create a second Unix user (CI runs as root)")


def _ensure_user() -> tuple[int, int]:
  """The team group and a teammate in it (made once; kept for later runs)."""
  try:
    gid = grp.getgrnam(GROUP).gr_gid
  except KeyError:
    subprocess.run(["groupadd", GROUP], check=True)
    gid = grp.getgrnam(GROUP).gr_gid
  try:
    uid = pwd.getpwnam(MATE).pw_uid
  except KeyError:
    subprocess.run(["useradd", "--no-create-home", "--gid", GROUP, "--shell", "/bin/sh", MATE],
                   check=True)
    uid = pwd.getpwnam(MATE).pw_uid
  return uid, gid


def _share_interpreter() -> None:
  """Lets other users reach this Python (a pyenv build under /root is behind a 0700
  /root): adds o+x, traversal only, to the folders on the way that lack it, as
  an admin does for a shared install. The venv and the checkout are world-readable."""
  for target in (Path(sys.base_prefix), Path(os.path.realpath(sys.executable)), ROOT):
    for d in reversed(target.parents):
      if d.is_dir() and not d.stat().st_mode & stat.S_IXOTH:
        d.chmod(d.stat().st_mode | stat.S_IXOTH)


@pytest.fixture(scope="module")
def team():
  uid, gid = _ensure_user()
  _share_interpreter()
  base = Path(tempfile.mkdtemp(prefix="jaxrank-team-"))
  base.chmod(0o755)  # pytest's tmp folders are 0700: the teammate could not reach in
  ws = base / "ws"
  ws.mkdir()
  os.chown(ws, 0, gid)
  ws.chmod(0o2770)  # group-owned, setgid: everything below inherits the group
  home = base / "home"
  home.mkdir()
  os.chown(home, uid, gid)
  try:
    yield ws, home, gid
  finally:
    shutil.rmtree(base, ignore_errors=True)


def _env(ws: Path, home: Path) -> dict:
  return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", HOME=str(home),
              JAXRANK_HOME=str(ws), MPLCONFIGDIR=str(home / "mpl"),
              XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}")


def _as(user: str | None, ws: Path, home: Path, *args: str, ok: bool = True):
  """`python -m ARGS` as `user` (None: this process's user) with umask 007."""
  cmd = ["sh", "-c", f"umask {UMASK:03o} && exec \"$@\"", "sh", sys.executable, "-m", *args]
  if user:
    cmd = ["runuser", "-u", user, "--", *cmd]
  p = subprocess.run(cmd, cwd=ROOT, env=_env(ws, home), capture_output=True, text=True,
                     timeout=600)
  if ok:
    assert p.returncode == 0, f"{args[0]} as {user or 'owner'} failed:\n{p.stderr[-4000:]}"
  return p


def _modes_ok(ws: Path, gid: int) -> list[str]:
  """Paths under `ws` that the group could not use as its own."""
  bad = []
  for p in [ws, *ws.rglob("*")]:
    st = p.lstat()
    want = 0o070 if p.is_dir() else 0o060
    if st.st_gid != gid or st.st_mode & want != want or (p.is_dir() and
                                                          not st.st_mode & stat.S_ISGID):
      bad.append(f"{stat.filemode(st.st_mode)} gid={st.st_gid} {p.relative_to(ws)}")
  return bad


def test_a_teammate_lists_reads_predicts_and_resumes_a_run(team, tmp_path):
  ws, home, gid = team
  sample = notebooks.sample_data_dir()
  # The owner: a store model and a 2-step run, both written under umask 007.
  old = os.umask(UMASK)
  try:
    hf.import_model(store.Workspace(ws).ensure(), make_tiny_bert_folder(tmp_path / "src"),
                    "tiny")
  finally:
    os.umask(old)
  flagfile = tiny_train_flagfile(ws.parent / "tiny.flags", **{"train.steps": 2})
  flagfile.chmod(0o644)
  _as(None, ws, home, "experiments.train", f"--flagfile={flagfile}", "--name=tiny")
  assert json.loads((ws / "runs" / "tiny" / "run.json").read_text())["steps"] == 2

  # The teammate lists and re-hashes the store.
  p = _as(MATE, ws, home, "experiments.store", "list")
  assert "tiny" in p.stdout
  _as(MATE, ws, home, "experiments.store", "verify", "tiny")
  # ... writes the results table, which shows the owner's run ...
  p = _as(MATE, ws, home, "experiments.results")
  assert "tiny" in p.stdout and (ws / "results" / "runs.csv").exists()
  # ... predicts from it by name ...
  out = ws / "submission.csv"
  _as(MATE, ws, home, "experiments.predict", "--name=tiny", f"--data_dir={sample}",
      "--split=test", f"--output={out}")
  submission.validate_submission(submission.read_submission(out),
                                 notebooks.load_split(sample, "test"))
  # ... and resumes it for longer: refused with the changed field named, then allowed.
  p = _as(MATE, ws, home, "experiments.train", f"--flagfile={flagfile}", "--name=tiny",
          "--config.train.steps=4", ok=False)
  assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
  [err] = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
  assert "started with another config (train.steps: 2 -> 4)" in err, err
  _as(MATE, ws, home, "experiments.train", f"--flagfile={flagfile}", "--name=tiny",
      "--config.train.steps=4", "--allow_config_change")
  run = json.loads((ws / "runs" / "tiny" / "run.json").read_text())
  assert (run["status"], run["steps"], run["n_starts"]) == ("done", 4, 2)
  [change] = run["config_changes"]
  assert change["changes"] == [{"key": "train.steps", "old": 2, "new": 4}]

  owners = {p.lstat().st_uid for p in ws.rglob("*")}
  assert owners == {0, pwd.getpwnam(MATE).pw_uid}  # both wrote here
  assert _modes_ok(ws, gid) == []

r"""Chaos: kill -9 training and encoding at random moments; every run must end
exactly where an undisturbed run ends, and no reader may ever see a half-written file.

  python -m benchmarks.chaos --runs=3 --kills=2 [--what=train,encode] [--seed=S]

For each of `--runs` runs the real command (`experiments.train` on a tiny
BOW-MLP config, `experiments.encode` with a tiny BERT from the store) is
started, SIGKILLed at a random moment (startup, a step, a checkpoint write, an
encoder shard write...) up to `--kills` times, and rerun by the same command
until it finishes. Then:

* train: its final parameters equal an undisturbed run's bit for bit, and so
  do its validation metrics and its logged losses per step;
* encode: its vector cache holds the same vectors as an undisturbed run's;
* while it ran, a watcher read every file as soon as it appeared under its
  final name (JSON records, the metrics log's finished lines, encoder shards)
  and after every kill every checkpoint on disk was restored: nothing partial
  was ever visible.

Prints one line per run and a summary; exit code 1 if any check failed.
No SLURM here: a kill -9 is what a node crash, an OOM kill or a time limit
without warning does.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from absl import app, flags

_RUNS = flags.DEFINE_integer("runs", 3, "Killed runs per kind.")
_KILLS = flags.DEFINE_integer("kills", 2, "At most this many kill -9 per run.")
_WHAT = flags.DEFINE_list("what", ["train", "encode"], "train and/or encode.")
_SEED = flags.DEFINE_integer("seed", None, "Random seed (default: random, printed).")
_STEPS = flags.DEFINE_integer("steps", 24, "Training steps of the tiny run.")
_OUT = flags.DEFINE_string("out", None, "Working folder (default: a temp folder).")

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
  from tests.conftest import subprocess_env  # pylint: disable=g-import-not-at-top
  return subprocess_env(1)


class Watcher(threading.Thread):
  """Reads every file of `root` as soon as it is visible; records what a reader
  would have found half-written."""

  def __init__(self, root: Path):
    super().__init__(daemon=True)
    self.root, self.violations, self.reads = root, [], 0
    self._halt = threading.Event()

  def stop(self) -> None:
    self._halt.set()
    self.join()

  def run(self) -> None:
    import numpy as np  # pylint: disable=g-import-not-at-top
    while not self._halt.is_set():
      for path in list(self.root.rglob("*")):
        rel = path.relative_to(self.root)
        # Temp names are private to their writer; Orbax step folders are checked after kills.
        if any(p.startswith(".") or "tmp" in p for p in rel.parts) or not path.is_file():
          continue
        if {"checkpoints", "best"} & set(rel.parts):
          continue
        try:
          if path.suffix == ".json":
            json.loads(path.read_bytes())
          elif path.name.endswith(".jsonl"):
            for line in path.read_bytes().split(b"\n")[:-1]:  # finished lines only
              json.loads(line)
          elif path.suffix == ".csv" and "predictions" in rel.parts:
            from jaxrank import submission  # pylint: disable=g-import-not-at-top
            submission.read_submission(path)
          elif path.suffix == ".npz" and path.name.startswith("shard-"):
            with np.load(path) as z:
              z["keys"], z["vecs"]  # pylint: disable=pointless-statement
          else:
            continue
          self.reads += 1
        except FileNotFoundError:
          continue  # replaced or moved meanwhile: fine
        except Exception as e:  # pylint: disable=broad-except
          self.violations.append(f"{rel}: {type(e).__name__}: {str(e)[:120]}")
      time.sleep(0.02)


def _run_with_kills(cmd: list[str], log: Path, rng: random.Random, kills: int,
                    after_kill: Callable[[], None], window_s: float,
                    progress: Callable[[], int] | None = None, total: int = 0
                    ) -> tuple[list[int], int]:
  """Runs `cmd` until it exits 0, SIGKILLing it up to `kills` times at random
  moments: a random time into the run or, half the time when `progress` (e.g.
  the last logged step of `total`) is given, right after a random step, so
  kills land in start-up, steps and checkpoint writes alike. Returns (the
  progress at each kill, starts)."""
  done, starts, where = 0, 0, []
  while True:
    starts += 1
    with open(log, "ab") as f:
      proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if done < kills:
      t_kill = time.monotonic() + rng.uniform(0.5, window_s)
      at_step = (rng.randint(min(progress() + 1, total), total)
                 if progress and total and rng.random() < 0.5 else None)
      if at_step is not None:
        t_kill += 3600  # the step decides
      while proc.poll() is None and time.monotonic() < t_kill and (
          at_step is None or progress() < at_step):
        time.sleep(0.002)
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
        where.append(progress() if progress else -1)
        after_kill()
        continue
    rc = proc.wait()
    if rc == 0:
      return where, starts
    raise RuntimeError(f"{cmd[2]} exited {rc}; see {log}")


def _train(out: Path, rng: random.Random, runs: int, kills: int, steps: int) -> list[str]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank import checkpoint, results  # pylint: disable=g-import-not-at-top
  from tests.slurm_cluster import tiny_train_flagfile  # pylint: disable=g-import-not-at-top

  flagfile = tiny_train_flagfile(out / "tiny.flags", **{
      "train.steps": steps, "train.checkpoint_every": 3, "train.eval_every": 8,
      "train.keep_checkpoints": 2})

  def cmd(wd):
    return [sys.executable, "-m", "experiments.train", f"--flagfile={flagfile}",
            f"--workdir={wd}", f"--workspace={out / 'ws'}"]

  t0 = time.monotonic()
  ref = out / "train_ref"
  subprocess.run(cmd(ref), cwd=REPO, env=_env(), check=True, capture_output=True)
  window = time.monotonic() - t0
  want = [np.asarray(x) for x in _leaves(checkpoint.restore_params(ref))]
  want_val = json.loads((ref / "eval" / "val.json").read_text())["metrics"]
  want_loss = results.read_metrics(ref).query("split == 'train'")[["step", "loss"]].values.tolist()
  failures = []
  for i in range(runs):
    wd = out / f"train_{i}"
    wd.mkdir()
    watcher = Watcher(wd)
    watcher.start()
    bad_ckpts: list[str] = []

    def check_checkpoints(wd=wd, bad=bad_ckpts):
      # After a kill: every step folder a reader can see restores.
      for kind in ("checkpoints", "best"):
        for step in sorted(p.name for p in (wd / kind).glob("*") if p.name.isdigit()):
          try:
            checkpoint.restore_params(wd, int(step), best=kind == "best")
          except Exception as e:  # pylint: disable=broad-except
            bad.append(f"{kind}/{step}: {str(e)[:100]}")

    n_kills, starts = _run_with_kills(cmd(wd), out / f"train_{i}.log", rng,
                                      rng.randint(1, kills), check_checkpoints, window,
                                      lambda wd=wd: _last_step(wd), steps)
    watcher.stop()
    got = [np.asarray(x) for x in _leaves(checkpoint.restore_params(wd))]
    same = len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
    val = json.loads((wd / "eval" / "val.json").read_text())["metrics"]
    loss = results.read_metrics(wd).query("split == 'train'")[["step", "loss"]].values.tolist()
    aside = list((wd / "checkpoints" / "broken").glob("*"))
    ok = same and val == want_val and loss == want_loss and not watcher.violations \
        and not bad_ckpts and not aside
    print(f"train run {i}: kill -9 after steps {n_kills} (of {steps}), {starts} starts; "
          f"params identical: {same}; "
          f"val identical: {val == want_val}; losses identical: {loss == want_loss}; "
          f"files read while running: {watcher.reads}, half-written: {len(watcher.violations)}; "
          f"checkpoints not restoring after a kill: {len(bad_ckpts)}; set aside: {len(aside)}"
          + ("" if ok else "  <-- FAILED"))
    if not ok:
      failures.append(f"train run {i}: {watcher.violations[:3]} {bad_ckpts[:3]}")
  return failures


def _last_step(wd: Path) -> int:
  """The last training step in the run's metrics log (0 if none)."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  return max(helpers.train_steps_logged(wd), default=0)


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def _encode(out: Path, rng: random.Random, runs: int, kills: int) -> list[str]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank import hf, store  # pylint: disable=g-import-not-at-top
  from jaxrank.data import notebooks  # pylint: disable=g-import-not-at-top
  from jaxrank.features import encoder as encoder_features  # pylint: disable=g-import-not-at-top
  from tests.test_roberta import make_tiny_bert_folder  # pylint: disable=g-import-not-at-top

  src = make_tiny_bert_folder(out / "tiny_bert")

  def workspace(name):
    ws = store.Workspace(out / name).ensure()
    hf.import_model(ws, src, "tiny")
    return ws

  def cmd(ws):
    return [sys.executable, "-m", "experiments.encode", f"--data_dir={notebooks.sample_data_dir()}",
            "--split=train", "--encoder=tiny", "--max_tokens=32", f"--workspace={ws.root}"]

  def vectors(ws):
    cache = encoder_features.VectorCache(ws.data_dir / "encoder_cache" / "tiny" / "L32")
    return {k: v for k, v in cache._map.items()}  # pylint: disable=protected-access

  t0 = time.monotonic()
  ref = workspace("encode_ref")
  subprocess.run(cmd(ref), cwd=REPO, env=_env(), check=True, capture_output=True)
  window = time.monotonic() - t0
  want = vectors(ref)
  failures = []
  for i in range(runs):
    ws = workspace(f"encode_{i}")
    watcher = Watcher(ws.data_dir)
    watcher.start()
    n_kills, starts = _run_with_kills(cmd(ws), out / f"encode_{i}.log", rng,
                                      rng.randint(1, kills), lambda: None, window,
                                      lambda ws=ws: len(list(ws.data_dir.rglob("shard-*.npz"))))
    watcher.stop()
    got = vectors(ws)
    same = got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    ok = same and not watcher.violations
    print(f"encode run {i}: kill -9 after shards {n_kills}, {starts} starts; {len(got)} "
          f"vectors, identical: "
          f"{same}; files read while running: {watcher.reads}, half-written: "
          f"{len(watcher.violations)}" + ("" if ok else "  <-- FAILED"))
    if not ok:
      failures.append(f"encode run {i}: {watcher.violations[:3]}")
  return failures


def main(argv):
  del argv
  import tempfile  # pylint: disable=g-import-not-at-top
  seed = _SEED.value if _SEED.value is not None else random.randrange(1 << 30)
  rng = random.Random(seed)
  out = Path(_OUT.value or tempfile.mkdtemp(prefix="jaxrank-chaos-"))
  out.mkdir(parents=True, exist_ok=True)
  print(f"chaos: seed {seed}, {_RUNS.value} runs x {_WHAT.value}, up to {_KILLS.value} kills "
        f"each, in {out}")
  t0 = time.time()
  failures = []
  if "train" in _WHAT.value:
    failures += _train(out, rng, _RUNS.value, _KILLS.value, _STEPS.value)
  if "encode" in _WHAT.value:
    failures += _encode(out, rng, _RUNS.value, _KILLS.value)
  print(f"chaos: {'all runs identical to undisturbed ones, nothing half-written seen' if not failures else 'FAILED: ' + '; '.join(failures)} ({time.time() - t0:.0f}s)")
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  app.run(main)

"""TensorBoard event files of a run's scalars: `tensorboard --logdir=WS/runs` works offline.

Written with tensorboardX's synchronous `EventsWriter` (no background thread, so a
flush means the events are in the file). Each process start opens a new events
file; a resumed run's file begins with a SessionLog START at the first step it
will log, which tells TensorBoard to drop the earlier files' points from that
step on (those logged after the checkpoint it resumed from), as TensorFlow's own
writers do on restart.

  tb = ScalarWriter(workdir / "tb", purge_step=resumed_step + 1)
  tb.write(step, "train", {"loss": 0.4, "lr": 1e-3})    # tags train/loss, train/lr
  tb.flush()                                             # at each checkpoint
  tb.close()
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from tensorboardX import event_file_writer, summary
from tensorboardX.proto import event_pb2

TB_DIR = "tb"


class ScalarWriter:
  """Appends scalars to a new events file in `logdir`; does nothing with `enabled=False`.

  Flushes itself at most every `flush_secs` seconds while writing (so a live
  TensorBoard follows the run) and on `flush()` / `close()`.
  """

  def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None,
               enabled: bool = True, flush_secs: float = 30.0):
    self.logdir = Path(logdir)
    self._writer = None
    self._flush_secs = flush_secs
    self._last_flush = time.monotonic()
    if not enabled:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    # tensorboardX names the file by the second and host; the ns suffix keeps two starts
    # within one second (and sorted by name, in start order) from overwriting each other.
    self._writer = event_file_writer.EventsWriter(str(self.logdir / "events"),
                                                  filename_suffix=f".{time.time_ns()}")
    if purge_step is not None and purge_step > 0:
      self._writer.write_event(event_pb2.Event(
          wall_time=time.time(), step=int(purge_step),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self.flush()

  def write(self, step: int, prefix: str, scalars: Mapping[str, Any]) -> None:
    """Writes `scalars` at `step` under the tags `prefix/name`."""
    if self._writer is None:
      return
    now = time.time()
    for name, value in scalars.items():
      self._writer.write_event(event_pb2.Event(
          wall_time=now, step=int(step), summary=summary.scalar(f"{prefix}/{name}", value)))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  def flush(self) -> None:
    """Puts everything written so far on disk (file flush + fsync)."""
    if self._writer is not None:
      self._writer.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

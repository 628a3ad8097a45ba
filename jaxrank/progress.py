"""Progress lines with a rate and an ETA, for logs that end up in SLURM output files."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def fmt_eta(seconds: float) -> str:
  s = int(max(seconds, 0))
  return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
  """`update(n)` after each piece of work; logs "WHAT done/total (p%), rate, ETA"
  at most every `every_s` seconds, and a last line at the total if it logged
  before (short jobs, e.g. a validation pass, stay silent)."""

  def __init__(self, total: int, what: str, unit: str = "items", every_s: float = 30.0,
               logger: logging.Logger | None = None):
    self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
    self.done = 0
    self._log = logger or log
    self._t0 = self._last = time.monotonic()
    self._logged = False

  def update(self, n: int = 1) -> None:
    self.done += n
    now = time.monotonic()
    if now - self._last >= self.every_s or (self._logged and self.done >= self.total):
      self._last = now
      self._logged = True
      rate = self.done / max(now - self._t0, 1e-9)
      self._log.info("%s: %d/%d %s (%.0f%%), %.1f %s/s, ETA %s", self.what, self.done,
                     self.total, self.unit, 100 * self.done / max(self.total, 1), rate, self.unit,
                     fmt_eta((self.total - self.done) / max(rate, 1e-9)))

"""Test set-up: CPU only, 2 forced host devices, no network, no hub."""

import os

# Must run before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Cheap XLA optimisation: tests are dominated by compile time, not run time.
# Subprocess tests add these to their own XLA_FLAGS (tests.conftest.FAST_XLA).
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# 2 host devices so every test also exercises the sharded path.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {FAST_XLA}")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(devices: int | None = 1, **extra: str) -> dict[str, str]:
  """The environment of a test's subprocess: this one's, offline, CPU, the repo importable,
  `devices` forced host devices (None: no XLA_FLAGS, jax's default of one), plus `extra`."""
  env = {**os.environ, "PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1"}
  env.pop("XLA_FLAGS", None)
  if devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_XLA}"
  env.update(extra)
  return env

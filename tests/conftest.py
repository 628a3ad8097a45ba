"""Test set-up: CPU only, 2 forced host devices, no network, no hub."""

import os

# Must run before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 2 host devices so every test also exercises the sharded path. Cheap XLA
# optimisation: tests are dominated by compile time, not run time.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

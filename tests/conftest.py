"""Test-suite settings, made before JAX starts.

- One host device, explicitly: tests that need more start a subprocess with
  their own XLA_FLAGS, so nothing a module does at import can change the
  device count of the whole run.
- JAX's persistent compilation cache in an ignored folder (.jax_cache/ at the
  repository root; CUBIST_TEST_JAX_CACHE overrides), for this process and the
  binaries the tests start, so a rerun of the suite does not recompile.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

os.environ["XLA_FLAGS"] = " ".join(
  [
    flag
    for flag in os.environ.get("XLA_FLAGS", "").split()
    if not flag.startswith("--xla_force_host_platform_device_count")
  ]
  + ["--xla_force_host_platform_device_count=1"]
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
  "CUBIST_TEST_JAX_CACHE", str(ROOT / ".jax_cache")
)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

"""The house rules, checked: layering, imports, formatting, library modules' side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("cubist", "search")


def _modules(*packages):
  for package in packages:
    for path in sorted((ROOT / package).rglob("*.py")):
      yield path


def test_the_world_never_imports_the_strategies():
  """Nothing under cubist/ imports search/ or experiments/ (the import-linter contract too)."""
  offenders = []
  for path in _modules("cubist"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module]
      offenders += [
        f"{path.relative_to(ROOT)}: {n}"
        for n in names
        if n.split(".")[0] in ("search", "experiments")
      ]
  assert not offenders


def test_import_linter_layers_contract():
  """pyproject.toml's layers contract: experiments above search above cubist."""
  lint = Path(sys.executable).parent / "lint-imports"
  if not lint.exists():
    pytest.skip("import-linter is not installed")
  done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_library_modules_import_at_module_level_only():
  """No import inside a function in cubist/ or search/: a cycle is never dodged that way."""
  offenders = []
  for path in _modules(*LIBRARY):
    tree = ast.parse(path.read_text())
    for function in ast.walk(tree):
      if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for node in ast.walk(function):
          if isinstance(node, (ast.Import, ast.ImportFrom)):
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
  assert not offenders


def test_importing_every_library_module_changes_no_global_setting():
  """No flags, no XLA settings, no device count change: library modules only define things."""
  modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _modules(*LIBRARY)]
  modules = [m[: -len(".__init__")] if m.endswith(".__init__") else m for m in modules]
  code = f"""
import json, os, sys
from absl import flags
import jax, matplotlib, optax, scipy.stats  # third-party imports the library makes
before = dict(xla=os.environ.get("XLA_FLAGS"), flags=sorted(flags.FLAGS))
devices = jax.device_count()
for name in {modules!r}:
  __import__(name)
after = dict(xla=os.environ.get("XLA_FLAGS"), flags=sorted(flags.FLAGS))
print(json.dumps(dict(before=before, after=after, devices=[devices, jax.device_count()],
                      chex="chex" in sys.modules)))
"""
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])
  assert report["before"] == report["after"]
  assert report["devices"][0] == report["devices"][1]
  assert not report["chex"]  # a test-only library (it defines flags at import)


def test_one_formatter_for_the_whole_tree():
  """ruff format (2-space indent, pyproject.toml) and its import and name checks."""
  for command in (["format", "--check", "."], ["check", "."]):
    done = subprocess.run(
      [sys.executable, "-m", "ruff", *command],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
    )
    if "No module named ruff" in done.stderr:
      pytest.skip("ruff is not installed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

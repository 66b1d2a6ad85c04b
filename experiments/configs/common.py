"""What every config file shares: how the text after `file.py:` is read.

`--config=experiments/configs/NAME.py:a,b=1` hands "a,b=1" to `get_config`;
`parse_options` turns it into {"a": "1", "b": "1"} and refuses an unknown
option with one line that lists the known ones.
"""

from __future__ import annotations

import math


def parse_options(arg: str | None, known, config: str) -> dict[str, str]:
  """Comma-separated `name` or `name=value` items; a bare name means "1"."""
  options = {}
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    name, _, value = item.partition("=")
    options[name.strip()] = value.strip() if "=" in item else "1"
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ValueError(f"unknown {config} config option(s) {unknown}; known: {sorted(known)}")
  return options


def number(options: dict[str, str], name: str, default: float, config: str) -> float:
  """A numeric option, with a one-line error for text that is not a finite number."""
  text = options.get(name)
  if text is None:
    return default
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"{config} config option {name}={text!r} is not a number") from None
  if not math.isfinite(value):
    raise ValueError(f"{config} config option {name}={text!r} is not a finite number")
  return value


def integer(options: dict[str, str], name: str, default: int, config: str, low: int = 1) -> int:
  """An integer option >= low, with a one-line error for anything else."""
  value = number(options, name, default, config)
  if value != int(value) or value < low:
    raise ValueError(f"{config} config option {name}={options[name]!r} is not an integer >= {low}")
  return int(value)


def path(options: dict[str, str], name: str, config: str, example: str) -> str:
  """A path option (`name=PATH`); a bare `name` (no path) is a one-line error."""
  if options[name] in ("", "1"):  # a bare `name` reads as "1"
    raise ValueError(f"{config} config option {name} needs a path: {name}=PATH (e.g. {example})")
  return options[name]

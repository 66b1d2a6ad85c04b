"""What every binary shares: one error path, a quiet start, a clean Ctrl-C.

Errors. Whatever is the user's input or environment (the config, the flags,
files, the workdir, the store) ends a binary with one line on stderr and exit
status 2, before anything compiles and before the workdir is created or
changed. A binary's own checks say `error: <what> (<where>): <why>; <what to
do>` (`UserError`); the library's one-line ValueErrors already name the field
or file and, mostly, what to do, and are shown as `error: <message>`. OSError
and sqlite3 errors (a full disk, a vanished file) are environment too. Anything
else is a bug and raises with its traceback; `--debug` (or CUBIST_DEBUG=1)
shows the traceback of the one-line errors as well.

ml_collections loads the config file while absl parses the flags, before
main(), so `run` hands absl a flags parser (`parse_flags`) that turns config
mistakes (a missing file, an unknown variant or field, a bad value) into the
same one line.

Start. `configure_jax()`, first thing in main() and before anything touches
JAX (which creates its backends lazily, at the first computation): JAX's INFO
lines about platforms it cannot find (libtpu) are silenced; on a machine with
no accelerator plugin JAX is told to look for the CPU only; on a CPU backend
the CPU gets one host device per core (cubist.devices). The library itself
changes none of these.

Interrupts. `StopRequest` handles Ctrl-C and SIGTERM by setting a flag that
the engine polls after each committed chunk (`engine.run(stop=...)`); the
binary then prints one line (runs committed, the command that resumes) and
exits 130. A second Ctrl-C abandons the chunk in flight (its transaction is
never committed, so nothing is lost but that chunk).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shlex
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Callable, NoReturn

import jax
from absl import app, flags
from ml_collections import ConfigDict
from ml_collections.config_flags import config_flags

from cubist import devices

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# The user's input or environment; anything else raised is a bug.
INPUT_ERRORS = (ValueError, OSError, sqlite3.Error)

DEBUG = flags.DEFINE_bool(
  "debug", False, "Show the traceback of an error instead of one line (or set CUBIST_DEBUG=1)."
)
COMPILE_CACHE = flags.DEFINE_string(
  "compile_cache",
  None,
  "Folder of JAX's persistent compilation cache, so a resumed or repeated run starts training "
  "at once (default: $CUBIST_COMPILE_CACHE, else $XDG_CACHE_HOME/cubist/jax or "
  "~/.cache/cubist/jax; 'none' turns it off).",
)


class UserError(Exception):
  """Bad input or environment, said in one line: what (where): why; what to do."""

  def __init__(self, what: str, where, why: str, todo: str = ""):
    self.what, self.where, self.why, self.todo = what, str(where), why, todo
    super().__init__(f"{what} ({where}): {why}" + (f"; {todo}" if todo else ""))


def one_line(error: BaseException) -> str:
  """An exception's message on one line (an OSError with its file, if it names one)."""
  if isinstance(error, OSError) and error.strerror and not isinstance(error, UserError):
    text = error.strerror + (f" ({error.filename})" if error.filename else "")
  else:
    text = str(error) or type(error).__name__
  return " ".join(text.split())


def debugging(argv=None) -> bool:
  """--debug on the command line (parsed or not yet) or CUBIST_DEBUG=1 in the environment."""
  if os.environ.get("CUBIST_DEBUG", "").lower() in ("1", "true", "yes"):
    return True
  if argv is not None and any(a in ("--debug", "-debug", "--debug=true") for a in argv):
    return True
  return flags.FLAGS.is_parsed() and DEBUG.value


def fail(error: BaseException | str) -> NoReturn:
  """Print `error: <one line>` on stderr and exit with status 2."""
  text = error if isinstance(error, str) else one_line(error)
  sys.stdout.flush()
  print(f"error: {text}", file=sys.stderr, flush=True)
  sys.exit(EXIT_ERROR)


def run(main: Callable) -> None:
  """`app.run(main)` with the shared flags parser, start-up and error path."""
  app.run(_guarded(main), flags_parser=parse_flags)


def _guarded(main: Callable) -> Callable:
  def wrapped(argv):
    configure_jax()
    try:
      return main(argv)
    except KeyboardInterrupt:
      interrupted("stopped early")
    except (UserError, *INPUT_ERRORS) as error:
      if debugging():
        raise
      fail(error)

  return wrapped


# --- Flags and the config file ------------------------------------------------


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every command-line or config mistake as one line.

  Asked for help, absl prints it and exits with status 1; asking is not an
  error, so the binaries exit 0 then.
  """
  try:
    _check_config_file(argv)
    rest = flags.FLAGS(argv)
    _check_config_loaded()
  except SystemExit as stop:
    if stop.code == 1 and any(arg in HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)
    raise
  except UserError as error:
    if debugging(argv):
      raise
    fail(error)
  except (flags.Error, ValueError, TypeError, OSError, AttributeError, KeyError) as error:
    if debugging(argv):
      raise
    fail(_describe_flag_error(argv, error))
  except SyntaxError as error:  # in a config file the user wrote
    if debugging(argv):
      raise
    fail(
      UserError("config file", f"{error.filename}:{error.lineno}", f"invalid Python: {error.msg}")
    )
  return rest


def config_argument(argv: list[str] | None = None) -> str | None:
  """The value of --config on the command line (e.g. "experiments/configs/train.py:quick")."""
  argv = sys.argv if argv is None else argv
  for index, arg in enumerate(argv):
    match = re.fullmatch(r"--?config(=(.*))?", arg)
    if match:
      if match.group(1) is not None:
        return match.group(2)
      return argv[index + 1] if index + 1 < len(argv) else None
  return None


def _check_config_file(argv: list[str]) -> None:
  """The file of --config exists and is a Python file (ml_collections would fail later)."""
  if "config" not in flags.FLAGS:
    return
  value = config_argument(argv)
  if value is None:
    return  # absl says that the flag is required
  path = value.split(":", 1)[0]
  example = f"e.g. --config={CONFIGS.relative_to(ROOT) / 'train.py'}"
  if not path:
    raise UserError("config file", repr(value), "no file named", example)
  if os.path.isdir(path):
    raise UserError("config file", path, "is a directory", f"name a .py file in it, {example}")
  if not os.path.exists(path):
    todo = f"the configs are in {CONFIGS}"
    if not os.path.isabs(path) and (ROOT / path).is_file():
      todo = f"run from {ROOT}, or pass --config={ROOT / value}"
    raise UserError("config file", path, f"no such file (relative to {os.getcwd()})", todo)
  if not path.endswith(".py"):
    raise UserError(
      "config file", path, "is not a Python config file (a .py with get_config())", example
    )


def _check_config_loaded() -> None:
  """ml_collections defers a config file's OSError to the first use: surface it now."""
  if "config" not in flags.FLAGS:
    return
  value = flags.FLAGS["config"].value
  if value is None or isinstance(value, ConfigDict):
    return
  try:
    value.lock  # an _ErrorConfig raises the load error it holds
  except OSError as error:
    cause = _root_cause(error)
    raise UserError("config file", config_argument(), one_line(cause)) from None


def _root_cause(error: BaseException) -> BaseException:
  """The innermost exception of a chain (absl and ml_collections re-raise with context)."""
  while True:
    inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if inner is None:
      return error
    error = inner


def _describe_flag_error(argv: list[str], error: BaseException) -> UserError:
  """What went wrong while absl parsed the flags (and ml_collections loaded the config)."""
  message = one_line(error)
  config = config_argument(argv)
  unknown = _unknown_override(argv, config) if config else None
  if unknown is not None:
    return unknown
  if message.startswith("flag --config="):  # get_config() refused the text after ':'
    cause = _root_cause(error)
    text = one_line(cause)
    if text.startswith("Error whilst parsing config file"):
      text = text.rsplit(": ", 1)[-1]
    return UserError("config", config, text)
  match = re.match(r"flag (--config\.[\w.]+=.*?): (.*)", message)
  if match:
    return UserError(
      "config override", match.group(1), match.group(2), "give a value of the field's type"
    )
  match = re.match(r"flag --(\w+)=None: Flag --\w+ must have a value other than None", message)
  if match:
    return UserError("flag", f"--{match.group(1)}", "is required", "see --help")
  match = re.match(r"flag (--\w+=.*?): (.*)", message)
  if match:
    return UserError("flag", match.group(1), match.group(2), "see --help")
  if isinstance(error, flags.UnrecognizedFlagError):
    name = getattr(error, "flagname", "") or "?"
    return UserError("flag", f"--{name}", "no such flag", "see --help for this binary's flags")
  return UserError("command line", shlex.join(argv[1:]), message, "see --help")


def _unknown_override(argv: list[str], config: str) -> UserError | None:
  """A --config.FIELD=... naming a field the config does not have, or None."""
  overrides = [a for a in argv if re.match(r"--?(no)?config\.", a)]
  if not overrides:
    return None
  try:
    loaded = config_flags.ConfigFileFlagParser("config").parse(config)
  except Exception:  # the config itself is at fault: described elsewhere
    return None
  if not isinstance(loaded, ConfigDict):
    return None
  for arg in overrides:
    path = re.sub(r"^--?(no)?config\.", "", arg).split("=", 1)[0]
    node = loaded
    for part in path.split("."):
      if not isinstance(node, ConfigDict) or part not in node:
        known = ", ".join(sorted(node.keys())) if isinstance(node, ConfigDict) else "none"
        return UserError(
          "config override", arg, f"the config has no field {path!r}", f"its fields: {known}"
        )
      node = node[part]
  return None


def no_arguments(argv: list[str]) -> None:
  """Refuse positional arguments (a forgotten `--` or `=` is a common slip)."""
  if len(argv) > 1:
    raise UserError(
      "command line", shlex.join(argv[1:]), "unexpected arguments", "every option is a --flag=value"
    )


# --- Shards, the workdir and output folders -------------------------------------


def check_shards(shard_index: int, num_shards: int) -> tuple[int, int]:
  """--num_shards >= 1 and --shard_index in 0..num_shards-1."""
  if num_shards < 1:
    raise UserError(
      "flag", f"--num_shards={num_shards}", "must be >= 1", "use 1 (the default) for no sharding"
    )
  if not 0 <= shard_index < num_shards:
    raise UserError(
      "flag",
      f"--shard_index={shard_index}",
      f"must be in 0..{num_shards - 1} for --num_shards={num_shards}",
      "run one process per shard index",
    )
  return shard_index, num_shards


def check_workdir(workdir: str, flag: str = "--workdir") -> Path:
  """A folder this process can write in, or can create; nothing is created or changed."""
  if not workdir:
    raise UserError("workdir", repr(workdir), "is empty", f"pass {flag}=DIR")
  return check_writable_dir(Path(workdir), "workdir", flag)


def check_writable_dir(path: Path, what: str, flag: str) -> Path:
  """`path` is a writable folder, or the nearest existing folder above it is writable."""
  if path.exists():
    if not path.is_dir():
      raise UserError(what, path, "is a file, not a directory", f"choose another {flag}")
    if not os.access(path, os.W_OK | os.X_OK):
      raise UserError(what, path, "is not writable", f"choose a writable {flag}")
    return path
  parent = path.parent
  while not parent.exists() and parent != parent.parent:
    parent = parent.parent
  if not parent.is_dir():
    raise UserError(
      what,
      path,
      f"cannot be created: {parent} is a file, not a directory",
      f"choose another {flag}",
    )
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(
      what, path, f"cannot be created: {parent} is not writable", f"choose a writable {flag}"
    )
  return path


def check_readable_dir(path: str, what: str, flag: str) -> Path:
  """An existing folder this process can read (e.g. a store copied off a cluster)."""
  if not path:
    raise UserError(what, repr(path), "is empty", f"pass {flag}=DIR")
  folder = Path(path)
  if not folder.exists():
    raise UserError(what, folder, "does not exist or is not a directory", f"check {flag}")
  if not folder.is_dir():
    raise UserError(what, folder, "does not exist or is not a directory (a file)", f"check {flag}")
  if not os.access(folder, os.R_OK | os.X_OK):
    raise UserError(what, folder, "cannot be read (permission denied)", "check its permissions")
  return folder


def remove_if_empty(path: Path) -> None:
  """Remove a folder this process created if it is still empty (never its contents)."""
  try:
    path.rmdir()
  except OSError:
    pass


# --- JAX start-up ---------------------------------------------------------------


def _accelerator_plugins() -> list[str]:
  """The JAX accelerator plugins installed (CUDA, ROCm, TPU, ...), without importing them."""
  names = [entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")]
  if importlib.util.find_spec("jax_plugins") is not None:
    names += ["jax_plugins"]
  if importlib.util.find_spec("libtpu") is not None:
    names += ["libtpu"]
  return names


def _accelerator_devices() -> bool:
  """Whether this machine shows an accelerator's device files (GPU or TPU)."""
  nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/accel0", "/dev/vfio/0")
  return any(os.path.exists(node) for node in nodes)


def compile_cache_dir() -> Path | None:
  """Where compiled programs are kept between runs (None: nowhere)."""
  chosen = COMPILE_CACHE.value if flags.FLAGS.is_parsed() else None
  chosen = chosen or os.environ.get("CUBIST_COMPILE_CACHE")
  if chosen:
    return None if chosen.lower() == "none" else Path(chosen).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "cubist" / "jax"


def configure_jax() -> bool:
  """Quiet platform search, the persistent compilation cache, and one host device per
  core on a CPU backend.

  Returns whether the backend will be the CPU. Must run before anything
  computes with JAX (it only sets configuration; no backend is created). The
  cache keeps every compiled program (no minimum compile time), keyed by the
  program, the backend and the device count, so a second invocation of a
  binary with the same sweep compiles nothing.
  """
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  cache = compile_cache_dir()
  if cache is not None and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  platforms = jax.config.jax_platforms or ""
  if platforms:
    cpu = platforms.split(",")[0].strip() == "cpu"
  elif not _accelerator_plugins():
    jax.config.update("jax_platforms", "cpu")  # nothing else could be found anyway
    cpu = True
  else:
    cpu = not _accelerator_devices()
  if cpu:
    devices.use_host_cores()
  return cpu


# --- Interrupts -----------------------------------------------------------------


class StopRequest:
  """Ctrl-C / SIGTERM: finish (commit) the chunk in flight, then stop; `stop=` for engine.run.

  The first signal only sets the flag (and says so on stderr); a second one
  raises KeyboardInterrupt, abandoning the chunk in flight.
  """

  def __init__(self):
    self.requested = False

  def install(self) -> "StopRequest":
    for number in (signal.SIGINT, signal.SIGTERM):
      signal.signal(number, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    # os.write, not print: the handler may run in the middle of a write to stderr.
    os.write(
      2, f"\n{name}: stopping after the chunk in flight (Ctrl-C again abandons it)\n".encode()
    )

  def __call__(self) -> bool:
    return self.requested


def terminate_as_interrupt() -> None:
  """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (for code that cannot poll a flag)."""
  signal.signal(signal.SIGTERM, signal.default_int_handler)


def resume_command() -> str:
  """The command line that started this process (run it again to resume)."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  python = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else "python"
  head = [python, "-m", spec.name] if spec is not None else [python, sys.argv[0]]
  return shlex.join(head + sys.argv[1:])


def interrupted(what: str) -> NoReturn:
  """Print `interrupted: <what>; resume with: <command>` on stderr and exit with 130."""
  sys.stdout.flush()
  print(f"interrupted: {what}; resume with: {resume_command()}", file=sys.stderr, flush=True)
  sys.exit(EXIT_INTERRUPTED)

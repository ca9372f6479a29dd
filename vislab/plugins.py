"""A user's code, imported only when the user asks: `--import FILE.py|module`, a model reference given for a
new training run, or an installed package's `vislab.models` entry points. Nothing named in a checkpoint
or a run's config is imported by itself; what was imported here is what references may resolve against."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from vislab.errors import VislabError

ENTRY_POINT_GROUP = "vislab.models"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_FILES: dict[Path, tuple[str, ModuleType]] = {}  # resolved path -> (the path as given, its module)
_MODULES: dict[str, ModuleType] = {}  # dotted name -> module, imported by the user's request
_REQUESTED_MODULES: list[str] = []  # those of _MODULES the user named (not an installed plugin's)
_entry_points_loaded = False
_LOCKED: str | None = None  # in a server: why it imports no code beyond what it was started with


LOCK_ENV = "VISLAB_IMPORTS_LOCKED"  # how the lock passes to the processes a locked one starts


def lock(reason: str) -> None:
    """From now on, references resolve only against code imported so far: a web page's visitors never make
    the server, or the jobs it starts, import a file or module (an uploaded zip may hold .py files). The
    server's owner names code when starting it (`vislab ui --import FILE.py`); its jobs inherit the lock
    once they have imported what the server passes them with `--import`."""
    global _LOCKED
    _LOCKED = reason
    os.environ[LOCK_ENV] = reason


def lock_if_inherited() -> None:
    if os.environ.get(LOCK_ENV):
        lock(os.environ[LOCK_ENV])


def refuse_when_locked(given: str) -> None:
    if _LOCKED is not None:
        raise VislabError(f"{given}: {_LOCKED}")


def import_code(spec: str) -> ModuleType:
    """Imports a Python file (`nets.py`, `path/to/nets.py`) or an importable module (`my_pkg.nets`) at the
    user's request, so that the models it registers and the names it defines can be used."""
    spec = str(spec)
    if spec.endswith(".py"):
        return import_file(Path(spec), spec)
    if not MODULE_NAME.fullmatch(spec):
        raise VislabError(f"--import {spec}: expected a FILE.py or a package.module name")
    return import_module(spec)


def import_all(specs: list[str] | None) -> None:
    """What `--import` (repeatable) names, in order."""
    for spec in specs or []:
        import_code(spec)


def import_file(path: Path, given: str) -> ModuleType:
    resolved = path.expanduser().resolve()
    if resolved in _FILES:
        return _FILES[resolved][1]
    refuse_when_locked(given)
    if not resolved.is_file():
        raise VislabError(f"no such file: {given}")
    # A private module name, so that a user's nets.py never takes the place of an installed module.
    stem, digest = re.sub(r"\W", "_", resolved.stem), hashlib.sha1(bytes(resolved)).hexdigest()[:8]
    name = f"vislab_user_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name while it runs
    sys.path.insert(0, str(resolved.parent))  # so that it can import the files beside it
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        where = f"{given}, line {error.lineno}" if error.lineno else given
        raise VislabError(f"{where}: syntax error: {error.msg}") from None
    except Exception as error:
        sys.modules.pop(name, None)
        raise VislabError(f"importing {given} failed: {describe_failure(error, resolved)}") from None
    finally:
        sys.path.remove(str(resolved.parent))
    _FILES[resolved] = (given, module)
    return module


def import_module(name: str) -> ModuleType:
    if name in _MODULES:
        return _MODULES[name]
    refuse_when_locked(name)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise VislabError(f"no module named {name} (is its folder on PYTHONPATH?)") from None
        raise VislabError(f"importing {name} failed: {describe_failure(error)}") from None
    except SyntaxError as error:
        raise VislabError(f"{error.filename}, line {error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:
        raise VislabError(f"importing {name} failed: {describe_failure(error)}") from None
    _MODULES[name] = module
    _REQUESTED_MODULES.append(name)
    return module


def describe_failure(error: BaseException, file: Path | None = None) -> str:
    """'nets.py, line 4: NameError: name 'x' is not defined': where in the user's code it failed."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if file is None or Path(f.filename) == file] or frames
    message = str(error).splitlines()[0] if str(error) else ""
    where = f"{Path(own[-1].filename).name}, line {own[-1].lineno}: " if own else ""
    return f"{where}{type(error).__name__}: {message}".rstrip(": ")


def imported_file(path: str) -> tuple[str, ModuleType] | None:
    """The user-imported file a reference's `path` names: the same file, else the only imported file of
    that name (a run trained elsewhere names the file as it was given there)."""
    resolved = Path(path).expanduser().resolve()
    if resolved in _FILES:
        return _FILES[resolved]
    same_name = [found for file, found in _FILES.items() if file.name == Path(path).name]
    return same_name[0] if len(same_name) == 1 else None


def imported_module(name: str) -> ModuleType | None:
    load_entry_points()
    return _MODULES.get(name)


def remember_module(module: ModuleType) -> None:
    """A module whose object the user handed to vislab in Python: references into it may resolve."""
    if module.__name__ not in _MODULES:
        _MODULES[module.__name__] = module
        _REQUESTED_MODULES.append(module.__name__)


def file_of_module(module_name: str) -> str | None:
    """The path as given of a user-imported file, from the private name its module got."""
    return next((given for given, module in _FILES.values() if module.__name__ == module_name), None)


def import_arguments() -> list[str]:
    """`--import` for everything this process imported at the user's request, in order: what a `vislab`
    process started from here (the web UI's training jobs) needs to build the same models."""
    specs = [given for given, _ in _FILES.values()] + _REQUESTED_MODULES
    return [word for spec in specs for word in ("--import", spec)]


def load_entry_points() -> None:
    """Imports the installed packages that declare `vislab.models` entry points (installing them was the
    user's choice), once: a module registers its models as it is imported; an entry point naming a
    function or class registers it under the entry point's name. A broken one is a warning, not a stop."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from vislab.models._registry import entry_of_builder, register_model

    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:
            print(
                f"vislab: warning: plugin {entry_point.name} ({entry_point.value}) did not load: "
                f"{describe_failure(error)}",
                file=sys.stderr,
            )
            continue
        module_name = entry_point.value.split(":")[0].strip()
        if module_name in sys.modules:
            _MODULES.setdefault(module_name, sys.modules[module_name])
        if not isinstance(loaded, ModuleType) and callable(loaded) and entry_of_builder(loaded) is None:
            register_model(entry_point.name)(loaded)


def reset() -> None:
    """Forgets what was imported, and any lock (tests: each starts as a fresh process would)."""
    global _entry_points_loaded, _LOCKED
    _LOCKED = None
    os.environ.pop(LOCK_ENV, None)
    _FILES.clear()
    _MODULES.clear()
    _REQUESTED_MODULES.clear()
    _entry_points_loaded = False

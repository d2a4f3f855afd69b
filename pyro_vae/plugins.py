"""Components from outside pyro-vae: a class or function named by its import path, or
registered by an installed package, and a record of where its code came from.

Anything a registry (:class:`~pyro_vae.registry.Registry`) builds by name can also be named

* by **import path** — ``package.module:Name`` (imported as Python would, the current
  directory searched first, as ``python -m`` does) or ``path/to/file.py:Name`` (the file
  loaded as the module of its name, its folder searched for its own imports, as when it is
  run as a script);
* by **entry point** — an installed package declares, in its ``pyproject.toml``::

      [project.entry-points."pyro_vae.models"]
      my_vae = "my_package.models:MyVAE"

  in the groups of :data:`GROUPS`, found with :func:`importlib.metadata.entry_points`.

The registry checks what it gets against its contract (a model, a guide, a dataset loader)
and builds it like its own entries. :class:`Source` records where the code came from — the
name, the source file of the defining module and that file's SHA-256 — so that a run can
find its code again, and :func:`check_source` refuses code that is missing or has changed.
Every failure is one :class:`~pyro_vae.errors.ConfigError` (or, for a recorded source,
:class:`~pyro_vae.errors.CheckpointError`) line. Nothing here imports torch.

Example:
    >>> is_reference("my_package.models:MyVAE"), is_reference("dense"), is_reference("data.npz")
    (True, False, False)
    >>> display_name("/home/me/project/my_vae.py:MyVAE")
    'my_vae.py:MyVAE'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from .errors import CheckpointError, ConfigError

#: kind of component → the entry-point group in which installed packages register them.
GROUPS = {"model": "pyro_vae.models", "guide": "pyro_vae.guides", "dataset": "pyro_vae.datasets"}

_IDENTIFIER = r"[A-Za-z_]\w*"
#: ``module:Name`` or ``path/to/file.py:Name`` (the name may be dotted: ``module:Outer.Inner``).
_REFERENCE = re.compile(rf"(?P<module>[^:]+):(?P<attr>{_IDENTIFIER}(?:\.{_IDENTIFIER})*)")
_MODULE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")


def is_reference(name: Any) -> bool:
    """Whether ``name`` is an import path: ``package.module:Name`` or ``file.py:Name``."""
    match = _REFERENCE.fullmatch(name) if isinstance(name, str) else None
    return bool(match) and (match["module"].endswith(".py") or bool(_MODULE.fullmatch(match["module"])))


def _split(name: str) -> Tuple[str, str, bool]:
    """``(module or file, attribute, whether it is a file)`` of an import path."""
    match = _REFERENCE.fullmatch(name)
    assert match is not None and is_reference(name), name
    return match["module"], match["attr"], match["module"].endswith(".py")


def canonical(name: Any) -> Any:
    """``name`` as a run records it: a file's import path with the file's absolute path (so
    that the run finds it from any directory); anything else unchanged."""
    if not is_reference(name):
        return name
    module, attr, is_file = _split(name)
    return f"{os.path.abspath(module)}:{attr}" if is_file else name


def display_name(name: Any) -> str:
    """A short name for tables and directory names: a file's import path without its folder."""
    if not is_reference(name):
        return str(name)
    module, attr, is_file = _split(name)
    return f"{os.path.basename(module)}:{attr}" if is_file else name


# ---------------------------------------------------------------------- entry points
def entry_points(group: str) -> Dict[str, importlib.metadata.EntryPoint]:
    """The entry points of ``group`` of the installed packages, by name (read anew each
    time: a package installed meanwhile is seen)."""
    try:
        found = importlib.metadata.entry_points(group=group)
    except TypeError:  # Python 3.9: a dict of groups
        found = importlib.metadata.entry_points().get(group, ())  # type: ignore[attr-defined]
    return {ep.name: ep for ep in found}


def distribution_of(ep: importlib.metadata.EntryPoint) -> Optional[str]:
    """``name version`` of the package that declares ``ep`` (``None`` if unknown)."""
    dist = getattr(ep, "dist", None)
    return None if dist is None else f"{dist.metadata['Name']} {dist.version}"


# ---------------------------------------------------------------------- where code comes from
@dataclass(frozen=True)
class Source:
    """Where the code of a component came from.

    Attributes:
        name: what it was named by: an import path or an entry point's name.
        module: the import name of the module that defines it.
        file: that module's source file (absolute).
        sha256: the SHA-256 of the file's bytes.
        root: the ``sys.path`` entry the module was imported from (``None`` for a file named
            by path, whose folder is searched anyway).
        distribution: ``name version`` of the installed package of an entry point.
    """

    name: str
    module: str
    file: str
    sha256: str
    root: Optional[str] = None
    distribution: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, what: str) -> "Source":
        """A source from its JSON record; anything else is one :class:`CheckpointError`."""
        keys = {"name", "module", "file", "sha256", "root", "distribution"}
        if not isinstance(data, dict) or not {"name", "module", "file", "sha256"} <= set(data) \
                or not set(data) <= keys or not all(isinstance(data[k], str) for k in ("name", "module", "file", "sha256")):
            raise CheckpointError(f"the record of {what} must be an object with the strings name, module, file "
                                  f"and sha256, got {data!r}")
        return cls(**data)


def file_hash(path: str, algorithm: str = "sha256") -> str:
    """The hash of a file's bytes (``hashlib``'s ``algorithm``), in hex, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _root(module: str, file: str) -> str:
    """The ``sys.path`` entry from which ``module`` (defined in ``file``) is imported."""
    levels = module.count(".") + 1 + (os.path.basename(file) == "__init__.py")
    for _ in range(levels):
        file = os.path.dirname(file)
    return file


def _import_error(what: str, err: BaseException, file: Optional[str] = None) -> ConfigError:
    """One line for an exception raised while a user's module was imported: the exception
    and where in the user's file it was raised."""
    where = ""
    if isinstance(err, SyntaxError) and err.filename:
        where = f" ({err.filename}, line {err.lineno})"
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if file is None or f.filename == file]
        if frames and file is not None:
            where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    text = err.msg if isinstance(err, SyntaxError) and err.msg else str(err)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return ConfigError(f"importing {what} failed: {type(err).__name__}" + (f": {first}" if first else "") + where)


def _module_file(module: str, what: str, root: Optional[str] = None) -> str:
    """The source file of ``module``, found without running it (its parent packages are
    imported); the current directory is searched first, then ``root``."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` and ASGI servers do for a module path
    for attempt in range(2):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        except Exception as err:  # noqa: BLE001 - a parent package of the user's that fails to import
            raise _import_error(f"the package of {module}", err) from None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            return os.path.abspath(spec.origin)
        if attempt == 0 and root and os.path.isdir(root) and root not in sys.path:
            sys.path.append(root)  # where the module was imported from when the run was trained
            continue
        break
    raise ConfigError(f"cannot import module {module} of {what}: it is not on the Python path "
                      f"(install its package, or run from the folder that holds it)")


def _load_file(path: str, what: str) -> Any:
    """The module of the Python file ``path`` (imported once per process under its file
    name, its folder searched first for its own imports, as when it is run as a script)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: {path} does not exist" if not os.path.isdir(path) else f"{what}: {path} is a directory")
    name = os.path.splitext(os.path.basename(path))[0]
    if not _MODULE.fullmatch(name):
        raise ConfigError(f"{what}: {os.path.basename(path)} is not a valid Python module name")
    folder, first = os.path.dirname(path), True
    loaded = sys.modules.get(name)
    if loaded is not None:
        if os.path.abspath(getattr(loaded, "__file__", "") or "") == path:
            return loaded
        # another file of that name is imported (two runs side by side): a name of its own
        name, first = f"{name}_{hashlib.sha256(path.encode()).hexdigest()[:8]}", False
        if name in sys.modules:
            return sys.modules[name]
    if folder not in sys.path:  # its own imports: first, as for a script (after the other file's)
        sys.path.insert(0 if first else len(sys.path), folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as err:  # noqa: BLE001 - the user's code failed: one line saying where
        del sys.modules[name]
        raise _import_error(path, err, path) from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - the user's code failed: one line saying where
        spec_file = None
        try:
            spec = importlib.util.find_spec(module)
            spec_file = spec.origin if spec is not None else None
        except Exception:  # noqa: BLE001 - only a better message was sought
            pass
        raise _import_error(f"module {module} of {what}", err, spec_file) from None


def _attribute(module: Any, attr: str, where: str, what: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def resolve(kind: str, name: Any, root: Optional[str] = None) -> Optional[Tuple[Any, Source]]:
    """The object a name of ``kind`` (``model``, ``guide``, ``dataset``) stands for outside
    pyro-vae, and its :class:`Source` — ``None`` if ``name`` is neither an import path nor
    the name of an installed entry point of the kind's group.

    Args:
        kind: a key of :data:`GROUPS`.
        name: an import path or an entry point's name.
        root: where the module was found before (a recorded :attr:`Source.root`).

    Raises:
        ConfigError: the module cannot be found or fails to import, or lacks the name.
    """
    try:
        return _resolve(kind, name, root)
    except ConfigError as err:  # about the parameter that named it (the CLI: --model, --guide, --dataset)
        err.params = err.params or (kind,)
        raise


def _resolve(kind: str, name: Any, root: Optional[str]) -> Optional[Tuple[Any, Source]]:
    what = f"{kind} {display_name(name)!r}"
    distribution = None
    if is_reference(name):
        module, attr, is_file = _split(name)
        if is_file:
            loaded = _load_file(module, what)
            file, module_name, root = os.path.abspath(module), loaded.__name__, None
        else:
            file = _module_file(module, what, root)
            loaded, module_name = _import(module, what), module
            root = _root(module, file)
        obj = _attribute(loaded, attr, os.path.basename(file) if is_file else f"module {module}", what)
    else:
        ep = entry_points(GROUPS[kind]).get(name) if isinstance(name, str) else None
        if ep is None:
            return None
        distribution = distribution_of(ep)
        what = f"{kind} {name!r} of the installed package {distribution or ep.value}"
        module_name = ep.module
        file = _module_file(module_name, what)
        loaded = _import(module_name, what)
        obj = _attribute(loaded, ep.attr or "", f"module {module_name}", what) if ep.attr else loaded
        root = _root(module_name, file)
    file = os.path.abspath(getattr(loaded, "__file__", None) or file)
    return obj, Source(str(canonical(name)), module_name, file, file_hash(file), root, distribution)


def check_source(kind: str, record: Source) -> None:
    """Refuse recorded code that cannot be found or has changed since it was recorded, in
    one :class:`CheckpointError` line — before the code is imported again.

    Example:
        >>> check_source("model", Source("/nowhere/gone.py:VAE", "gone", "/nowhere/gone.py", "0" * 64))
        Traceback (most recent call last):
        ...
        pyro_vae.errors.CheckpointError: the code of the model gone.py:VAE is missing: /nowhere/gone.py does not exist
    """
    what = f"the code of the {kind} {display_name(record.name)}"
    if is_reference(record.name):
        module, _, is_file = _split(record.name)
        file = os.path.abspath(module) if is_file else None
    else:
        ep = entry_points(GROUPS[kind]).get(record.name)
        if ep is None:
            came = f" (it came from {record.distribution})" if record.distribution else ""
            raise CheckpointError(f"{what} is missing: no installed package registers {kind} "
                                  f"{record.name!r} any more{came}")
        module = ep.module
        file = None
    if file is None:
        try:
            file = _module_file(module, what, record.root)
        except ConfigError:
            raise CheckpointError(f"{what} is missing: module {module} cannot be imported here (the run "
                                  f"recorded {record.file}); install it or run from the folder that holds it") from None
    if not os.path.isfile(file):
        raise CheckpointError(f"{what} is missing: {file} does not exist")
    now = file_hash(file)
    if now != record.sha256:
        raise CheckpointError(f"{what} has changed since the run was trained: {file} has SHA-256 {now[:12]}…, "
                              f"the run recorded {record.sha256[:12]}…; restore that version to use this run")

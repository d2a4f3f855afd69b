"""Where datasets come from: named datasets and sources read from a path.

A *named* dataset (``mnist5k``, ``cifar10``, …) registers its loader in :data:`DATASETS`; a
*path source* (a ``.npz`` file, a folder of images, …) registers a loader with a predicate
saying which paths it reads. A loader is called as ``load(name_or_path, data_dir, download,
**options)`` — its options are keyword parameters with annotations and defaults, checked
by :func:`~pyro_vae.options.bind_options`, so a source that takes none refuses any — and
returns ``(train, train_labels, test, test_labels)`` or an :class:`Arrays` that adds
``source`` (what the source says of the data: a folder's path, fingerprint, skipped files)
and, where the source has one, a validation split (``valid``, ``valid_labels``).
Images are uint8 levels or floats in [0, 1], (N, C, H, W) or (N, H, W), or a map-style
``Dataset`` of uint8 images (C, H, W) read one by one; labels or ``None``;
:class:`~pyro_vae.data.ImageDataset` checks them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ..errors import ConfigError
from ..registry import Registry


class Arrays(NamedTuple):
    """What a loader returns (a plain 4-tuple is read as one with ``source=None``): a source
    with a validation split of its own returns it as ``valid`` (and ``valid_labels``)."""

    train: Any
    train_labels: Optional[Any]
    test: Any
    test_labels: Optional[Any]
    source: Optional[Dict[str, Any]] = None
    valid: Optional[Any] = None
    valid_labels: Optional[Any] = None


Loader = Callable[..., Arrays]

def check_loader(load: Any, name: str) -> Loader:
    """``load`` if it meets the dataset contract — a function called as ``load(name,
    data_dir, download, **options)`` that returns ``(train, train_labels, test,
    test_labels)`` — else one :class:`ConfigError` naming what it lacks.

    Example:
        >>> def digits(n: int = 100): ...
        >>> check_loader(digits, "my.py:digits")
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: dataset 'my.py:digits' takes (n): a loader is called as load(name, data_dir, download, **options) and returns (train, train_labels, test, test_labels)
    """
    how = "a loader is called as load(name, data_dir, download, **options) and returns (train, train_labels, test, test_labels)"
    if not callable(load) or isinstance(load, type):
        raise ConfigError(f"dataset {name!r} is {'a class' if isinstance(load, type) else 'not callable'}: {how}",
                          params=("name",))
    params = list(inspect.signature(load).parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return load
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3:
        raise ConfigError(f"dataset {name!r} takes ({', '.join(p.name for p in params)}): {how}", params=("name",))
    return load


#: Named datasets; one from outside pyro-vae (an import path, an installed package's entry
#: point) is a loader checked by :func:`check_loader`.
DATASETS: Registry[Loader] = Registry("dataset", accept=check_loader)


@dataclass(frozen=True)
class PathSource:
    """A loader of datasets named by a path, for the paths ``matches`` accepts."""

    description: str
    matches: Callable[[str], bool]
    load: Loader


PATH_SOURCES: List[PathSource] = []


def register_path_source(description: str, matches: Callable[[str], bool]) -> Callable[[Loader], Loader]:
    """Decorator: register a loader of the paths ``matches`` accepts (``description`` says
    which, in error messages)."""

    def decorator(load: Loader) -> Loader:
        PATH_SOURCES.append(PathSource(description, matches, load))
        return load

    return decorator


def find_loader(name: str) -> Loader:
    """The loader of a dataset name or path; unknown ones raise listing what is valid."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a dataset is a name or a path, got {name!r}", params=("name",))
    if name in DATASETS:
        return DATASETS.get(name)
    external = DATASETS.external(name)  # an import path, or an installed package's entry point
    if external is not None:
        return external
    for source in PATH_SOURCES:
        if source.matches(name):
            return source.load
    raise ConfigError(
        f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS.names())}, or "
        + ", or ".join(s.description for s in PATH_SOURCES), params=("name",)
    )

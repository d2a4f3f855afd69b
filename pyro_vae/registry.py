"""Name → factory registries, one per kind of component (models, guides, priors, likelihoods,
datasets), and the one place where a component is built from a name and typed options —
its own entries, or (for the kinds with an entry-point group) a component from outside
pyro-vae named by import path or registered by an installed package (:mod:`pyro_vae.plugins`)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, TypeVar

from . import plugins
from .errors import ConfigError
from .options import bind_options, jsonable

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories that refuses unknown names and options loudly.

    Entries are filled where the class is defined, with :meth:`register` as a decorator::

        MODELS = Registry("model")

        @MODELS.register("dense")
        class DenseVAE(VAE): ...

    Looking up a name that is not registered raises :class:`~pyro_vae.errors.ConfigError`
    whose message lists the valid names, so a typo never falls through silently;
    :meth:`build` checks the options against the factory's annotated signature and records
    what was built in ``obj.spec``. A registry of a kind that users extend (``kind`` a key of
    :data:`~pyro_vae.plugins.GROUPS`: models, guides, datasets) also takes an import path
    (``package.module:Name``, ``file.py:Name``) or the name of an installed package's entry
    point, and checks what it finds with ``accept(obj, name)`` — the kind's contract.

    Example:
        >>> from typing import Sequence
        >>> SHAPES = Registry("shape")
        >>> @SHAPES.register("box")
        ... class Box:
        ...     def __init__(self, sides: Sequence[int] = (1, 1), label: str = "") -> None:
        ...         self.sides = sides
        >>> SHAPES.build("box", sides=[2, 3]).spec
        {'name': 'box', 'sides': [2, 3], 'label': ''}
        >>> SHAPES.build("box", sides=2)
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: option sides of shape 'box' must be a list of integers, got 2 (int); valid options: sides, label
    """

    def __init__(self, kind: str, accept: Optional[Callable[[Any, str], None]] = None,
                 group: Optional[str] = None) -> None:
        self.kind = kind
        #: the kind whose components may come from outside (a key of plugins.GROUPS), if any
        self.group = group if group is not None else (kind if accept is not None else None)
        self.accept = accept
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, Dict[str, str]] = {}

    def register(self, name: str, aliases: Optional[Mapping[str, str]] = None) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name`` (names are unique).

        Args:
            name: the registered name; a class gets it as ``registry_name``.
            aliases: old spellings of option names, ``{old: new}``, still accepted.
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._aliases[name] = dict(aliases or {})
            if isinstance(obj, type):
                obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry registered under ``name`` — or, for a kind users extend, the component
        its import path or an installed entry point names, checked against the contract.

        Raises:
            ConfigError: if ``name`` is not registered (the message lists the valid names),
                cannot be imported, or does not meet the contract.
        """
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        found = self.external(name)
        if found is None:
            outside = " (or an import path, package.module:Name or file.py:Name)" if self.group else ""
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: "
                              f"{', '.join(self.names() + self.installed())}{outside}", params=(self.kind,))
        return found

    def external(self, name: Any) -> Optional[T]:
        """The component from outside pyro-vae that ``name`` stands for (``None`` if none:
        a registered name, or a kind users do not extend), checked with :attr:`accept`."""
        if self.group is None or (isinstance(name, str) and name in self._entries):
            return None
        found = plugins.resolve(self.group, name)
        if found is None:
            return None
        if self.accept is not None:  # its errors name the component itself (params: the kind)
            self.accept(found[0], plugins.display_name(name))
        return found[0]

    def installed(self) -> List[str]:
        """Names that installed packages register through entry points (not shadowed by an
        entry of the registry)."""
        if self.group is None:
            return []
        return [n for n in plugins.entry_points(plugins.GROUPS[self.group]) if n not in self._entries]

    def options(self, name: str, options: Mapping[str, Any], skip: int = 1) -> Dict[str, Any]:
        """``options`` of entry ``name`` checked and typed, defaults filled in (see
        :func:`~pyro_vae.options.bind_options`); ``skip`` leading parameters are not options."""
        entry = self.get(name)
        with self.scoped():
            return bind_options(entry, options, f"{self.kind} {plugins.display_name(name)!r}", skip=skip,
                                aliases=self._aliases.get(name, {}))

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        """Build entry ``name`` with positional ``args`` and typed keyword ``options``.

        The built object gets ``spec = {"name": name, **options}`` with every default
        filled in (JSON-ready), so that it can be rebuilt from the spec alone (a file's
        import path with its absolute path, :func:`~pyro_vae.plugins.canonical`).
        """
        bound = self.options(name, options, skip=len(args))
        with self.scoped():
            obj = self.get(name)(*args, **bound)  # type: ignore[operator]
        obj.spec = {"name": plugins.canonical(name), **jsonable(bound)}
        return obj

    @contextlib.contextmanager
    def scoped(self) -> Iterator[None]:
        """Name the parameters of a :class:`ConfigError` raised inside as this kind's options
        (``hidden_dims`` → ``model.hidden_dims``), so that a caller can tell a model's
        ``channels`` from a dataset's (:attr:`~pyro_vae.errors.PyroVAEError.params`)."""
        try:
            yield
        except ConfigError as err:
            err.params = tuple(p if "." in p else f"{self.kind}.{p}" for p in err.params)
            raise

    def names(self) -> List[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def import_submodules(package: str, first: tuple = ("base",)) -> None:
    """Import every module of ``package`` (``first`` ones first, then alphabetically), so
    that each registers its entries: a new component is one new file, and no list elsewhere
    can forget it."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in [n for n in first if n in names] + [n for n in names if n not in first]:
        importlib.import_module(f"{package}.{name}")

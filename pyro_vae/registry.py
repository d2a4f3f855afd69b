"""Name → factory registries, one per kind of component (models, guides, priors, likelihoods,
datasets), and the one place where a component is built from a name and typed options."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, TypeVar

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
    what was built in ``obj.spec``.

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

    def __init__(self, kind: str) -> None:
        self.kind = kind
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
        """The entry registered under ``name``.

        Raises:
            ConfigError: if ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}",
                params=(self.kind,)
            ) from None

    def options(self, name: str, options: Mapping[str, Any], skip: int = 1) -> Dict[str, Any]:
        """``options`` of entry ``name`` checked and typed, defaults filled in (see
        :func:`~pyro_vae.options.bind_options`); ``skip`` leading parameters are not options."""
        entry = self.get(name)
        with self.scoped():
            return bind_options(entry, options, f"{self.kind} {name!r}", skip=skip, aliases=self._aliases[name])

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        """Build entry ``name`` with positional ``args`` and typed keyword ``options``.

        The built object gets ``spec = {"name": name, **options}`` with every default
        filled in (JSON-ready), so that it can be rebuilt from the spec alone.
        """
        bound = self.options(name, options, skip=len(args))
        with self.scoped():
            obj = self._entries[name](*args, **bound)
        obj.spec = {"name": name, **jsonable(bound)}
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

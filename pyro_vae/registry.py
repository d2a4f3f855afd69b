"""Name → factory registries, one per kind of component (models, guides, likelihoods, datasets)."""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, List, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories that refuses unknown names loudly.

    Entries are filled where the class is defined, with :meth:`register` as a decorator::

        MODELS = Registry("model")

        @MODELS.register("dense")
        class DenseVAE(VAE): ...

    Looking up a name that is not registered raises :class:`~pyro_vae.errors.ConfigError`
    whose message lists the valid names, so a typo never falls through silently.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name`` (names are unique)."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
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
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

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

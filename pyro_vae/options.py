"""Typed options: values from the command line or a JSON file checked against annotations.

Every option a user can set — a model's ``hidden_dims``, a guide's ``num_flows``, a
training setting in ``config.json`` — is a parameter of an annotated constructor or a field
of an annotated dataclass. :func:`check_value` checks one value against its annotation and
returns it in canonical form (lists become tuples where a sequence is expected, an ``int``
is accepted for a ``float``); :func:`bind_options` does that for a whole call, so that a
wrong key or type is one :class:`~pyro_vae.errors.ConfigError` that names the option, the
expected type and the valid keys, and lists the options it is about in its ``params``.
:func:`option` declares a dataclass field that is also a command-line option (its help
text beside its default), :func:`check_int`, :func:`check_positive`, :func:`check_choice`
and :func:`check_ranges` are the range checks every settings class uses. Nothing here
imports torch: the CLI validates its arguments with it before the heavy imports.

Example:
    >>> from typing import Optional, Sequence
    >>> check_value([64, 32], Sequence[int], "hidden_dims")
    (64, 32)
    >>> check_value(512, Sequence[int], "hidden_dims")
    Traceback (most recent call last):
    ...
    pyro_vae.errors.ConfigError: hidden_dims must be a list of integers, got 512 (int)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import math
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError

_NONE = type(None)


def describe(annotation: Any) -> str:
    """A human name of an annotation: ``Sequence[int]`` → ``a list of integers``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return "any value"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Union:
        parts = [describe(a) for a in args if a is not _NONE]
        text = " or ".join(parts)
        return f"{text} or null" if _NONE in args else text
    if origin in (list, tuple, collections.abc.Sequence):
        inner = args[0] if args else Any
        plural = {"an integer": "integers", "a number": "numbers", "a string": "strings",
                  "true or false": "booleans"}.get(describe(inner), describe(inner))
        return f"a list of {plural}"
    if origin in (dict, collections.abc.Mapping):
        return "an object"
    return getattr(annotation, "__name__", str(annotation))


def check_value(value: Any, annotation: Any, name: str, param: Optional[str] = None) -> Any:
    """``value`` checked against ``annotation`` and put in canonical form.

    Args:
        value: the value given.
        annotation: what it must be.
        name: how the message names it (``option hidden_dims of model 'dense'``).
        param: the parameter's own name, for the error's ``params`` (default ``name``).

    Raises:
        ConfigError: naming ``name``, the expected type and the value given.
    """
    params = (name if param is None else param,)

    def fail(what: str) -> ConfigError:  # the type is right, the value is not
        err = ConfigError(f"{name} must be {what}, got {value!r}", params=params)
        err.about_value = True  # type: ignore[attr-defined]
        return err

    def wrong_type() -> ConfigError:
        return ConfigError(f"{name} must be {describe(annotation)}, got {value!r} ({type(value).__name__})",
                           params=params)

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if origin is typing.Union:
        if value is None and _NONE in args:
            return None
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return check_value(value, arg, name, param)
            except ConfigError as err:
                if getattr(err, "about_value", False):  # e.g. inf for an optional float: say that
                    raise
        raise wrong_type()
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise wrong_type()
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong_type()
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail("a finite number")
            return float(value)
        raise wrong_type()
    if annotation is str:
        if isinstance(value, str):
            return value
        raise wrong_type()
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise wrong_type()
        inner = args[0] if args else Any
        try:
            return tuple(check_value(v, inner, name, param) for v in value)
        except ConfigError:
            raise wrong_type() from None
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise wrong_type()
        return dict(value)
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise wrong_type()
    return value


def annotated_parameters(fn: Callable, skip: int = 0) -> List[inspect.Parameter]:
    """The keyword-settable parameters of ``fn`` after the first ``skip``, annotations resolved."""
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError):  # an annotation that cannot be resolved: leave it unchecked
        hints = {}
    params = list(inspect.signature(fn).parameters.values())[skip:]  # a class's omits self
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.replace(annotation=hints.get(p.name, p.annotation)) for p in params if p.kind in kinds]


def bind_options(
    fn: Callable,
    options: Mapping[str, Any],
    what: str,
    skip: int = 0,
    aliases: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Check keyword ``options`` of ``fn`` (after its first ``skip`` parameters); return them
    typed, with every default filled in, in signature order.

    Args:
        fn: a class (its constructor) or a function with annotated parameters.
        options: the options given.
        what: how the error messages name the thing built (``model 'dense'``).
        skip: leading parameters that are not options (e.g. ``x_shape``).
        aliases: old spellings, ``{old: new}``.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones), a value of the wrong
            type (naming the option and the type), or a required option missing.
    """
    params = annotated_parameters(fn, skip)
    names = [p.name for p in params]
    given: Dict[str, Any] = {}
    for key, value in options.items():
        key = (aliases or {}).get(key, key)
        if key in given:
            raise ConfigError(f"option {key} of {what} is given twice (once by an old spelling)",
                              params=(key,))
        given[key] = value
    unknown = sorted(set(given) - set(names))
    if unknown:
        valid = ", ".join(names) if names else "none (it takes no options)"
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {what}; "
            f"valid options: {valid}", params=unknown
        )
    out: Dict[str, Any] = {}
    for p in params:
        if p.name in given:
            try:
                out[p.name] = check_value(given[p.name], p.annotation, f"option {p.name} of {what}", p.name)
            except ConfigError as err:
                raise ConfigError(f"{err}; valid options: {', '.join(names)}", params=err.params) from None
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(f"{what} needs the option {p.name} ({describe(p.annotation)})", params=(p.name,))
        else:
            out[p.name] = p.default
    return out


def jsonable(value: Any) -> Any:
    """``value`` with tuples turned into lists (recursively), as JSON holds them."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def parse_pairs(pairs: Optional[List[str]], flag: str) -> Dict[str, Any]:
    """``["KEY=VALUE", ...]`` from the command line as a dict; values are JSON where they
    parse as JSON (``[64,32]``, ``true``, ``0.5``) and strings otherwise; ``-`` in keys
    becomes ``_``. ``flag`` is how the messages name the list (the command line passes its
    flag: the caller, not the library, knows it)."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        key = key.strip().replace("-", "_")
        if key in out:
            raise ConfigError(f"{flag} {key} is given twice")
        out[key] = value
    return out


def fields_of(cls: type) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """The dataclass fields of ``cls`` with their annotations resolved."""
    hints = typing.get_type_hints(cls)
    return tuple(f for f in dataclasses.fields(cls) if not f.name.startswith("_")), hints


def dataclass_from_dict(cls: type, data: Any, what: str):
    """An instance of the dataclass ``cls`` from a JSON object, every field type-checked;
    unknown keys raise (listing the valid ones), missing keys take their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields, hints = fields_of(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
                          f"{what}; valid keys: {', '.join(names)}", params=unknown)
    kwargs = {k: check_value(v, hints.get(k, Any), f"{what}.{k}", k) for k, v in data.items()}
    return cls(**kwargs)


def option(default: Any, help: str, flag: Optional[str] = None, metavar: Any = None,
           latent: bool = False, on_resume: bool = False, cli: bool = True, nargs: Any = None):
    """A dataclass field that is also a command-line option.

    Args:
        default: the field's default.
        help: what ``--help`` says of it.
        flag: the option's spelling (default ``--`` + the field name with ``-`` for ``_``; a
            name without dashes is a positional argument).
        metavar: how ``--help`` shows its value (a tuple for several values).
        latent: the option needs a latent variable (refused for a density flow).
        on_resume: the option may change when a run is resumed (only ``epochs``).
        cli: whether the command line exposes it at all.
        nargs: how many values the flag takes (argparse's ``nargs``: ``2``, ``"+"``); a
            sequence without it is a repeatable flag, one value each time.
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "latent": latent,
            "on_resume": on_resume, "cli": cli, "nargs": nargs}
    return dataclasses.field(default=default, metadata=meta)


def check_fields(obj: Any, what: str) -> None:
    """Type-check every field of the dataclass instance ``obj`` against its annotation, in
    place (``int`` → ``float`` where a float is expected); a wrong type is a ConfigError."""
    fields, hints = fields_of(type(obj))
    for f in fields:
        value = check_value(getattr(obj, f.name), hints.get(f.name, Any), f"{what} {f.name}", f.name)
        object.__setattr__(obj, f.name, value)


def check_int(value: Any, name: str, low: int, high: Optional[int] = None) -> int:
    """``value`` if it is an integer in ``[low, high]``; else one ConfigError about the
    parameter ``name``.

    Example:
        >>> check_int(-1, "seed", 0, 2**32 - 1)
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: seed must be an integer from 0 to 4294967295, got -1
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        span = f"from {low} to {high}" if high is not None else f"≥ {low}"
        raise ConfigError(f"{name} must be an integer {span}, got {value!r}", params=(name,))
    return value


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite positive number; else one ConfigError about
    the parameter ``name``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}", params=(name,))
    return float(value)


def check_choice(value: Any, choices: Sequence[Any], what: str, param: str, valid: Optional[str] = None) -> Any:
    """``value`` if it is one of ``choices``; else one ConfigError about the parameter
    ``param`` that lists them (``valid`` names them in the plural, default ``what`` + s).

    Example:
        >>> check_choice("sometimes", ("dynamic", "static", "none"), "binarization", "binarize")
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: unknown binarization 'sometimes'; valid binarizations: dynamic, static, none
    """
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid {valid or what + 's'}: "
                          f"{', '.join(str(c) for c in choices)}", params=(param,))
    return value


def check_ranges(obj: Any, checks: Mapping[str, Any], what: str) -> None:
    """One ConfigError naming every field of ``obj`` (a dataclass, or a mapping of values)
    whose check failed, its ``params`` those fields: each check is a bool, or ``(bool,
    "the valid range")`` — which the message then states."""
    bad = []
    for key, check in checks.items():
        ok, valid = check if isinstance(check, tuple) else (check, None)
        if not ok:
            value = obj[key] if isinstance(obj, Mapping) else getattr(obj, key)
            bad.append((key, f"{key}={value!r}" + (f" (must be {valid})" if valid else "")))
    if bad:
        raise ConfigError(f"invalid {what}: " + ", ".join(text for _, text in bad),
                          params=[key for key, _ in bad])

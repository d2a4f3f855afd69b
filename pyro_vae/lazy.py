"""Packages whose public names are imported on first use (PEP 562), so that importing
``pyro_vae`` (e.g. for its errors or typed options, as the command line does before it has
checked its arguments) does not import torch and Pyro."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose name ``n`` lives in the submodule
    ``exports[n]``; a name is imported when first asked for, then cached in the package."""
    module = importlib.import_module(package)

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__

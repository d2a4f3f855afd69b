"""Dataset sources: every module of this package registers its datasets when imported, and
the package imports all of them (a new dataset is one new file)."""

from ..registry import import_submodules
from .base import DATASETS, PATH_SOURCES, find_loader, register_path_source

import_submodules(__name__)

__all__ = ["DATASETS", "PATH_SOURCES", "find_loader", "register_path_source"]

"""The build backend: setuptools' own, leaving the source tree as it found it.

setuptools builds a wheel through `build/` (and `*.egg-info/`) in the source
folder; this wraps its PEP 517 hooks, the in-tree backend pattern setuptools
documents, and removes what a build created there (never what was there
before). Used by pyproject.toml's [build-system] (backend-path = ["tools"]).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 (every hook not wrapped here, as is)

#: What setuptools writes into the source folder while it builds.
_SCRATCH = ("build", "*.egg-info")


@contextmanager
def _leave_no_scratch() -> Iterator[None]:
    before = {p for pattern in _SCRATCH for p in Path().glob(pattern)}
    try:
        yield
    finally:
        for pattern in _SCRATCH:
            for path in Path().glob(pattern):
                if path not in before and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)


def _clean(hook: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _leave_no_scratch():
            return hook(*args, **kwargs)

    wrapped.__name__ = hook.__name__
    wrapped.__doc__ = hook.__doc__
    return wrapped


build_wheel = _clean(build_meta.build_wheel)
build_sdist = _clean(build_meta.build_sdist)
prepare_metadata_for_build_wheel = _clean(build_meta.prepare_metadata_for_build_wheel)
get_requires_for_build_wheel = _clean(build_meta.get_requires_for_build_wheel)
get_requires_for_build_sdist = _clean(build_meta.get_requires_for_build_sdist)

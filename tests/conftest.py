"""Shared fixtures.

Real data are read in place from ``../shared/data`` (or ``$XMINE_SHARED_DATA``).
A test that needs them skips with the reason when they are absent, except
under ``CI=true``, where a missing file fails the run instead: CI has the data,
so a skip there would hide a broken checkout.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

_REPO = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where nothing may skip for a missing input."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` on a developer machine; fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this input must be present)")
    pytest.skip(reason)


def import_or_skip(name: str, reason: str) -> ModuleType:
    """Import an optional module (e.g. sherpa, the fit extra); skip the caller without it, fail under CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if in_ci():
            pytest.fail(f"{reason} (CI=true: .ci/run installs it)", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real X-ray files, ``../shared/data`` beside the repository."""
    path = Path(os.environ.get("XMINE_SHARED_DATA", _REPO.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        skip_or_fail(f"real data folder {path} is absent; set XMINE_SHARED_DATA to it")
    return path

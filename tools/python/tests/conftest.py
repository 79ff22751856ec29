"""Shared fixtures of the Python tools' tests (run: .venv/bin/python -m pytest tools/python/tests -q)."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from clip_edge_tools.paths import DEBUG_BINARY, EMOJI_BUNDLE, TEST_DATA


@pytest.fixture
def clip_edge():
    """The built clip-edge binary (never built here: `cargo build -p clip-edge-tools` or `cargo test` makes it)."""
    from clip_edge_tools.binary import ClipEdge

    if not DEBUG_BINARY.is_file():
        pytest.skip(f"{DEBUG_BINARY} is missing (cargo build -p clip-edge-tools)")
    return ClipEdge(DEBUG_BINARY)


def link_bundle(src: pathlib.Path, dst: pathlib.Path, files: list[str]) -> pathlib.Path:
    """A copy of a bundle folder: its manifest copied, the named files symlinked."""
    dst.mkdir(parents=True)
    shutil.copyfile(src / "bundle.toml", dst / "bundle.toml")
    for name in files:
        (dst / name).symlink_to(src / name)
    return dst


@pytest.fixture
def emoji_bundle() -> pathlib.Path:
    return EMOJI_BUNDLE


@pytest.fixture(scope="session")
def test_data_dir() -> pathlib.Path:
    return TEST_DATA

"""Where things are in the repository."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEFAULT_BUNDLE = ROOT / "models" / "default"
EMOJI_BUNDLE = ROOT / "models" / "emoji"
DEBUG_BINARY = ROOT / "target" / "debug" / "clip-edge"
CACHE = ROOT / ".cache"
TEST_DATA = ROOT / "tests" / "data"

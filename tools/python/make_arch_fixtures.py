#!/usr/bin/env python3
"""Reduced ViT-B/32, MobileCLIP2-S0 and ViT-S/16 fixtures with references (tests/data/arch).

Entry point only; the code is clip_edge_tools/fixtures/arch.py, also run as
`python -m clip_edge_tools.fixtures.arch` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.fixtures.arch import main

if __name__ == "__main__":
    sys.exit(main())

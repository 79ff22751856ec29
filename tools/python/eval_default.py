#!/usr/bin/env python3
"""Evaluate the emoji model (models/emoji) with clip-edge eval on freshly generated test sets.

Entry point only; the code is clip_edge_tools/default_model/evaluate.py, also run as
`python -m clip_edge_tools.default_model.evaluate` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.default_model.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

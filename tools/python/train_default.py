#!/usr/bin/env python3
"""Train the emoji model of models/emoji (--out RUN), or package a trained run as a bundle (--package RUN).

Entry point only; the code is clip_edge_tools/default_model/train.py, also run as
`python -m clip_edge_tools.default_model.train` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.default_model.train import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build and evaluate the photo bundle (models/default): EfficientNet-Lite0 read out into MiniLM-L6 text space.

Entry point only; the code is clip_edge_tools/photo_model/build.py, also run as
`python -m clip_edge_tools.photo_model.build` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.photo_model.build import main

if __name__ == "__main__":
    sys.exit(main())

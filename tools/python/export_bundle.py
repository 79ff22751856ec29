#!/usr/bin/env python3
"""Turn a CLIP model into a clip-edge bundle (open-clip | hf | package | requantise).

Entry point only; the code is clip_edge_tools/export/cli.py, also run as
`python -m clip_edge_tools.export.cli` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.export.cli import main

if __name__ == "__main__":
    sys.exit(main())

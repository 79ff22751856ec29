#!/usr/bin/env python3
"""Few-shot test sets (several frames per concept) and their prompt stores.

Entry point only; the code is clip_edge_tools/data/fewshot.py, also run as
`python -m clip_edge_tools.data.fewshot` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.data.fewshot import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Minimal reproduction of tract's dynamic-int8 slowdown, for upstream tract.

Entry point only; the code is clip_edge_tools/export/repro_tract_int8_sums.py, also run as
`python -m clip_edge_tools.export.repro_tract_int8_sums` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.export.repro_tract_int8_sums import main

if __name__ == "__main__":
    sys.exit(main())

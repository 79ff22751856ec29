#!/usr/bin/env python3
"""The int8-compute arithmetic as an ONNX graph for ONNX Runtime (the tests' reference).

Entry point only; the code is clip_edge_tools/export/int8_reference.py, also run as
`python -m clip_edge_tools.export.int8_reference` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.export.int8_reference import main

if __name__ == "__main__":
    sys.exit(main())

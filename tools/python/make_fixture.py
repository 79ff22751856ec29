#!/usr/bin/env python3
"""The reduced CLIP ViT test fixture and its references (tests/data/vit_tiny, images, crops).

Entry point only; the code is clip_edge_tools/fixtures/vit_tiny.py, also run as
`python -m clip_edge_tools.fixtures.vit_tiny` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.fixtures.vit_tiny import main

if __name__ == "__main__":
    sys.exit(main())

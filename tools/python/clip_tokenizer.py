#!/usr/bin/env python3
"""CLIP's BPE tokenizer as tokenizer.json, with open_clip's token ids as the reference (--out DIR).

Entry point only; the code is clip_edge_tools/tokenizer.py, also run as
`python -m clip_edge_tools.tokenizer` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.tokenizer import main

if __name__ == "__main__":
    sys.exit(main())

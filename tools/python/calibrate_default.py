#!/usr/bin/env python3
"""Choose the emoji model's seen/unseen calibration on seen concepts (--write: into the bundle).

Entry point only; the code is clip_edge_tools/default_model/calibrate.py, also run as
`python -m clip_edge_tools.default_model.calibrate` with tools/python on the path. --help for the arguments."""
import sys

from clip_edge_tools.default_model.calibrate import main

if __name__ == "__main__":
    sys.exit(main())

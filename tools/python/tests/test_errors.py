"""`errors.exit_code`: how every command-line `main` turns a refusal into
`error: ...` and an exit code."""

from __future__ import annotations

import pytest

from clip_edge_tools.errors import DataMissing, ExportError, exit_code


def fail(e: Exception):
    def run() -> None:
        raise e

    return run


def test_refusals_become_an_error_line_and_their_code(capsys):
    assert exit_code(lambda: None) == 0
    assert exit_code(fail(ExportError("model.onnx: no image tower"))) == 1
    assert capsys.readouterr().err == "error: model.onnx: no image tower\n"
    assert exit_code(fail(DataMissing("run fetch_data.sh")), codes={DataMissing: 2}) == 2
    assert exit_code(fail(ExportError("x")), codes={DataMissing: 2}) == 1


def test_bugs_are_not_hidden():
    with pytest.raises(ZeroDivisionError):
        exit_code(lambda: 1 / 0)

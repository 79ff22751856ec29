"""Refusals with a message for the user (the command-line tools print them as
`error: ...` and exit non-zero; nothing has been written)."""


class ToolError(Exception):
    """A refusal with a message for the user."""


class ManifestError(ToolError):
    """A bundle.toml that the runtime would refuse, or an edit it cannot make."""


class ExportError(ToolError):
    """An export, packaging or requantisation that cannot be done."""


class DataMissing(ToolError):
    """The npm or PyPI data is not installed; the message says how to get it."""


def exit_code(run, *, codes: dict[type[ToolError], int] | None = None) -> int:
    """Runs `run()` for a command-line `main`: 0 when it returns; a `ToolError`
    becomes `error: ...` on stderr and exit code 1 (or the code `codes` gives
    its class, most specific first)."""
    import sys

    try:
        run()
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return next((c for cls, c in (codes or {}).items() if isinstance(e, cls)), 1)
    return 0

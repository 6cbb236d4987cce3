"""One error type for refused exports (an existing file, a layer that is not RGB...): the CLI prints it."""


class ExportError(ValueError):
    """An export that cannot be made as asked; the message names the file and what to do."""

"""kzoo's user-facing errors: the CLI prints their one-line message, never a traceback."""


class KzooError(Exception):
    """A problem with the user's input (a file, a model dir, a text), said in one line."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).splitlines()))


class TokenizerError(KzooError, ValueError):
    """A problem with a tokenizer, its files or its input."""


class ModelDirError(KzooError):
    """A problem with a model dir, or with where an output goes."""


class RunnerError(KzooError):
    """A problem with running a model or an export (kzoo.runtime)."""


class GenerationError(KzooError, ValueError):
    """A problem with a generation request."""

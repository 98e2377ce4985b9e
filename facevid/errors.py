"""Errors the library raises; the CLI turns each into one line and a non-zero exit."""


class FacevidError(Exception):
    """Base class: the message is one line a user can act on."""


class InputError(FacevidError):
    """An input file is missing, unreadable, corrupt or of the wrong kind."""


class OutputExistsError(FacevidError):
    """The output exists and --force was not given."""


class NoFaceError(FacevidError):
    """No face was found where one is needed."""


class BackendUnavailableError(FacevidError):
    """A requested face backend (or device) is not available on this machine."""


class ConfigError(FacevidError):
    """A setting has an invalid value."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (kill, timeout, batch schedulers): raised like Ctrl-C so every output's temp file
    is removed on the way out; the CLI exits 143."""


class FacevidWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI prints one line)."""

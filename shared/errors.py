"""The project's exceptions: one root, a few kinds that callers treat differently."""


class FleetError(Exception):
    """Root of every error agent-fleet raises on purpose; its text is meant for the user."""


class ConfigError(FleetError):
    """A setting is missing, unknown or of the wrong type."""


class StateDirError(FleetError):
    """The state directory cannot be used (permissions, another daemon, path too long)."""


class DaemonUnavailable(FleetError):
    """The control socket did not answer."""


class RequestFailed(FleetError):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

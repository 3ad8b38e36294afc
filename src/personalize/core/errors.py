"""Errors the package raises for bad input: each names the file, row or field at fault."""


class PersonalizeError(Exception):
    """Base class for errors a user can act on."""


class DataError(PersonalizeError):
    """An input table cannot be read or does not have the expected shape."""


class ConfigError(PersonalizeError):
    """An experiment file or option is invalid."""


class AuditFailed(PersonalizeError):
    """The data hygiene audit found a problem in a check whose severity is ``fail``."""

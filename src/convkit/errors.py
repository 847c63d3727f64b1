"""Errors convkit raises for bad input; the command line prints their message without a traceback."""


class ConvkitError(Exception):
    """A problem the user can fix; the message says what was expected, what was found, and what to do."""


class DataError(ConvkitError):
    """A dataset file is missing, corrupt or malformed."""


class ConfigError(ConvkitError):
    """A setting, recipe, model name or run folder is not valid."""

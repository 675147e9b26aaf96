"""User-facing errors: train.py prints them as one line and exits with status 2."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing file); the message says what to do."""


class DataError(UserError):
    """A data set or file is missing, corrupt or malformed; the message names it."""


class ConfigError(UserError):
    """A config field is unknown or has a bad value; the message names the field."""

"""The one exception type users see as a single line."""


class AqaError(Exception):
    """A problem with the user's input or environment: printed as one line, never a traceback.

    The message says what is wrong, with which file, and what to do about it.
    """

"""The one exception type users see as a single line."""

import dataclasses

_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


class AqaError(Exception):
    """A problem with the user's input or environment: printed as one line, never a traceback.

    The message says what is wrong, with which file, and what to do about it.

    An AqaError raised in a torch DataLoader worker is raised again in the main process as
    `type(error)(message)`, where the message is a "Caught ... in DataLoader worker" header plus the
    worker's whole traceback; such a message is cut back to the original one line.
    """

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if text.startswith("Caught ") and _WORKER_TRACEBACK in text:
            text = text.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
        super().__init__(text)


class MissingDependency(AqaError, ImportError):
    """An optional package a command needs is not installed: one line for the user, and still an
    ImportError for code that falls back when an import fails."""


def unknown_fields(record: type, data: dict) -> str:
    """The keys of `data` that are no field of the dataclass `record`, comma-separated ("" if none): what a
    file written by another version of aqa carries that this one cannot rebuild."""
    return ", ".join(sorted(set(data) - {field.name for field in dataclasses.fields(record)}))

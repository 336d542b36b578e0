"""The one exception type for problems we expect: bad input, a missing or unsafe file.

``internseg`` reports an :class:`InputError` as one line naming the file, key or value and
exits with :data:`EXIT_INPUT`; anything else is a bug or a fault of the machine and keeps its
full traceback (exit 1). It derives from ValueError so that library code catching ValueError
keeps working.
"""

from __future__ import annotations

EXIT_INPUT = 2


class InputError(ValueError):
    """An expected problem with what the user gave; the message names file, key or value."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the user named (or the workflow should have made) is not there."""

"""The one exception type for problems we expect: bad input, a missing or unsafe file.

``internseg`` reports an :class:`InputError` as one line naming the file, key or value and
exits with :data:`EXIT_INPUT`; anything else is a bug or a fault of the machine and keeps its
full traceback (exit 1). It derives from ValueError so that library code catching ValueError
keeps working.
"""

from __future__ import annotations

EXIT_INPUT = 2
# A run that --stop-on-drift stopped because it left the original's course (its checkpoint
# kept): distinct from bad input, and not 75, which asks the workflow to resume.
EXIT_DRIFTED = 3


class InputError(ValueError):
    """An expected problem with what the user gave; the message names file, key or value."""

    exit_code = EXIT_INPUT


class MissingFileError(InputError, FileNotFoundError):
    """A file the user named (or the workflow should have made) is not there."""


class ModelArgumentError(InputError):
    """An argument a registered model class cannot be built with (known only to the class,
    such as heads that must divide a width). ``owner`` is the class's registered name and
    ``argument`` its constructor's: whoever built it from a config names the key path
    (:func:`internseg.config.building_model`)."""

    def __init__(self, owner: str, argument: str, problem: str):
        super().__init__(f"{owner}: {argument}: {problem}")
        self.owner, self.argument, self.problem = owner, argument, problem

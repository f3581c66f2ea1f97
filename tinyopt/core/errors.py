"""The one exception type for mistakes a user can fix (bad params, missing data, broken model files).

The CLI prints a UserError as a single line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says what is wrong and how to fix it."""


class NotApplicable(Exception):
    """A technique that cannot apply to this model (e.g. separable convolutions in a model with no
    Conv2D). The pipeline reports it as skipped, with this reason, and runs the rest of the plan."""

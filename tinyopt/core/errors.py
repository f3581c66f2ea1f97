"""The one exception type for mistakes a user can fix (bad params, missing data, broken model files).

The CLI prints a UserError as a single line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem in the user's input, with a message that says what is wrong and how to fix it."""


class NotApplicable(Exception):
    """A technique that cannot apply to this model (e.g. separable convolutions in a model with no
    Conv2D). The pipeline reports it as skipped, with this reason, and runs the rest of the plan."""


def disk_full(exc: BaseException) -> UserError | None:
    """The one line for a full disk, if `exc` is one (ENOSPC) or was raised while handling one (libraries
    re-raise it in their own words); None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            where = f" writing {exc.filename}" if exc.filename else ""
            return UserError(f"no space left on device{where}: free space and run again")
        exc = exc.__cause__ or exc.__context__
    return None

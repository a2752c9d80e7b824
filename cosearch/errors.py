"""One exception type for every mistake a user can make.

The CLI turns a ``UserError`` into a one-line message and exit status 2; everything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An input the user can fix: the message names the file or field and the fix."""

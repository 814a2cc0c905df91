"""One exception type for everything a user can get wrong.

The CLI prints it without a traceback (exit code 2) and the UI shows it as a message; anything else that
escapes is a bug in our code, not in the user's input.
"""


class PersonaDemoError(Exception):
    """Bad input or an impossible request, with a message a person understands."""

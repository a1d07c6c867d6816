"""The one error type that the command line turns into a sentence and exit status 2."""


class UserError(Exception):
    """Bad input or a state the user must fix.

    The message is one sentence that names the file (or option) and what is wrong with it.
    ``deadnet`` prints it as ``deadnet <command>: <message>`` and exits with status 2.
    """

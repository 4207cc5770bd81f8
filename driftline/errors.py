"""The one exception type the CLI turns into a one-line message and exit code 1."""


class DriftlineError(Exception):
    """An expected failure whose message tells the user what went wrong and what to do."""

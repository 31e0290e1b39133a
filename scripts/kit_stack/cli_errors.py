"""What kit-stack's commands raise for a one-line answer: never a traceback."""


class Usage(Exception):
    """Bad input (a folder, a port, a name): its message is the line the user sees; exit 2."""


class Failed(Exception):
    """A part of the stack did not come up (PostgreSQL, a migration, a function): exit 1."""

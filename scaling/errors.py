"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
  """Bad input from the user (a gin typo, a malformed CSV, a negative size, ...).

  The message must name the offending file, binding or column; the CLI prints it as one line.
  """

  exit_code = 2

"""Errors a user can fix from the command line.

Launch scripts (experiments/*.py) print a UserError as one line that names
the setting or file at fault, without a traceback: the message is the whole
story. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: a setting, a path or a file; the message says what to do."""


class ConfigError(UserError, ValueError):
  """A config value or key that cannot work."""


class EvaluationStopped(Exception):
  """A signal asked the run to stop while it evaluated or drew samples; the
  evaluation ended at the next batch (the checkpoint was already saved)."""

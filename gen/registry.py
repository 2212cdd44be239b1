"""Name -> object registries, so configs choose models and families by name."""

from __future__ import annotations

from typing import Any, Callable


class Registry:
  """A dict of named entries that says what was valid when a lookup fails."""

  def __init__(self, what: str, config_key: str):
    self._what = what
    self._config_key = config_key
    self._entries: dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def add(entry):
      if name in self._entries:
        raise ValueError(f"{self._what} {name!r} is registered twice")
      self._entries[name] = entry
      return entry
    return add

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise ValueError(
          f"{self._config_key}={name!r} is not a known {self._what}; "
          f"valid: {', '.join(sorted(self._entries))}")
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

"""Domain exceptions.  Messages name the file, the variable, what was expected and what was found."""

from __future__ import annotations

from os import PathLike
from typing import Any


class EtfuseError(Exception):
    """Base of every error the CLI reports without a traceback."""


class SourceFormatError(EtfuseError, ValueError):
    """A provider file is not what its reader expects."""

    def __init__(self, path: str | PathLike[str] | None, problem: str, *, variable: str | None = None,
                 expected: Any = None, found: Any = None, hint: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.variable = variable
        self.expected = expected
        self.found = found
        parts = [f"{self.path}" if self.path else "<input>"]
        if variable:
            parts.append(f"variable {variable!r}")
        text = ": ".join(parts) + f": {problem}"
        if expected is not None:
            text += f"; expected {expected}"
        if found is not None:
            text += f", found {found}"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class NoOverlapError(SourceFormatError):
    """The file holds no data inside the region (plus margin)."""


class StoreError(EtfuseError):
    """The harmonised store cannot accept or return what was asked."""


class UnknownNameError(EtfuseError, KeyError):
    """A name (source, region, method ...) that no registry knows; lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

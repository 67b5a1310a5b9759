"""Exceptions raised by :mod:`nfhep.io`.

Every error names the file, the tree and the branch it is about and, for bad values, how many entries
are affected. All of them derive from :class:`RootInputError`, a :class:`ValueError`; the "not found"
errors are also :class:`KeyError` (missing tree/branch) or :class:`FileNotFoundError` (missing file), so
``except KeyError`` keeps working for code written against uproot.
"""

from __future__ import annotations

__all__ = [
    "RootInputError",
    "MissingFileError",
    "MissingTreeError",
    "MissingBranchError",
    "JaggedBranchError",
    "NonNumericBranchError",
    "BadValuesError",
    "EmptySelectionError",
    "SelectionError",
]


class RootInputError(ValueError):
    """Base class of every input error of :mod:`nfhep.io` (a :class:`ValueError`)."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable for all subclasses
        return str(self.args[0]) if self.args else ""


class MissingFileError(RootInputError, FileNotFoundError):
    """An input file (or glob pattern) matched nothing."""


class MissingTreeError(RootInputError, KeyError):
    """The tree is not in the file, or the file has no TTree / several and none was named."""


class MissingBranchError(RootInputError, KeyError):
    """A requested feature, context or weight branch is not in the tree."""


class JaggedBranchError(RootInputError):
    """A branch holds a variable number (or a fixed array) of values per entry, not one number."""


class NonNumericBranchError(RootInputError):
    """A branch holds objects or strings, not numbers."""


class BadValuesError(RootInputError):
    """NaN or infinite values were found (``drop_bad=True`` drops those rows instead).

    Attributes
    ----------
    counts : dict
        ``{(file, tree, branch): number of bad entries}``.
    n_bad_rows : int
        Number of rows with at least one bad value.
    """

    def __init__(self, message: str, *, counts: dict, n_bad_rows: int):
        super().__init__(message)
        self.counts = dict(counts)
        self.n_bad_rows = int(n_bad_rows)


class EmptySelectionError(RootInputError):
    """No entry is left (empty trees, a selection that keeps nothing, or every row dropped as bad)."""


class SelectionError(RootInputError):
    """The selection (cut expression) could not be parsed or evaluated."""

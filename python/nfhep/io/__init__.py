"""ROOT input and output for nfhep (uproot + awkward; no ROOT installation needed).

Input
    :func:`read_features` reads feature/context/weight branches from ``file.root:tree`` specifications,
    glob patterns or lists into a float64 :class:`Sample`; :class:`RootSource` streams the same data in
    chunks for training on inputs larger than memory. Selections accept ROOT syntax (``&&``, ``||``,
    ``!``). Bad inputs raise :mod:`nfhep.io.errors` exceptions naming the file, tree and branch.

Output
    :func:`write_root` writes a TTree atomically (temporary file + rename) with ZSTD level 1;
    :func:`write_friend` writes new branches as a friend tree of an existing one; :class:`RootWriter`
    does the same chunk by chunk.
"""

from __future__ import annotations

from .errors import (
    BadValuesError,
    EmptySelectionError,
    JaggedBranchError,
    MissingBranchError,
    MissingFileError,
    MissingTreeError,
    NonNumericBranchError,
    RootInputError,
    SelectionError,
)
from .inputs import InputSpec, resolve_inputs, sha256_file
from .reader import DEFAULT_STEP_SIZE, RootSource, Sample, SourceFile, read_features
from .selection import translate_selection
from .writer import RootWriter, parse_compression, split_output_spec, write_friend, write_root

__all__ = [
    "read_features",
    "RootSource",
    "Sample",
    "SourceFile",
    "DEFAULT_STEP_SIZE",
    "write_root",
    "write_friend",
    "RootWriter",
    "parse_compression",
    "split_output_spec",
    "translate_selection",
    "resolve_inputs",
    "InputSpec",
    "sha256_file",
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

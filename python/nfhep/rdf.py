r"""nfhep flows inside ROOT's RDataFrame from Python, local or distributed (Dask).

Two calls for a ROOT user:

- :func:`setup` loads nfhep's C++ engine (``libnfhep_core``) and its ROOT header (``nfhep/root.hpp``) into
  ROOT's interpreter (cling) of this process, plus a small per-process model cache (see
  :func:`declaration`). Idempotent; called by :func:`define_logp`.
- :func:`define_logp` adds a column :math:`\log p(x \mid c)` of a model file to an RDataFrame: a local
  ``ROOT.RDataFrame`` (also under ``ROOT.EnableImplicitMT()``) or a distributed one
  (``ROOT.RDataFrame(tree, files, executor=dask_client)``, ``ROOT.RDF.Distributed.Dask.RDataFrame``).

.. code-block:: python

    import ROOT, nfhep.rdf
    df = ROOT.RDataFrame("events", ["a.root", "b.root"])               # or executor=client
    df = nfhep.rdf.define_logp(df, "model.safetensors")                 # column "nf_logp"
    h = df.Histo1D(("lp", "log p", 100, -20, 5), "nf_logp")

The column is a JIT-compiled ``Define`` expression that calls the engine one event at a time
(``nfhep::Flow::log_prob`` with a one-event workspace, as ``nfhep::root::FlowFunctor`` does). The model
file is loaded **once per process** — on the client for a local data frame, once per Dask worker process
for a distributed one — into a static cache keyed by (path, tensor checksum) in the declared C++ code,
and shared by every thread, task and data frame of that process. The workers get the declarations through
``ROOT.RDF.Distributed.DistributeCppCode`` (ROOT >= 6.36): the code sets the include path and loads the
library by absolute path (``#pragma cling add_include_path`` / ``load``), so every worker must see the
nfhep installation and the model file under the same paths as the client (a shared file system, the same
container or CVMFS area); a worker that reads a different file under the model's path fails with a message
naming both checksums instead of computing with another model. See ``docs/distributed-rdf.md``.

Values: the model computes in its own dtype (float32 or float64; inputs are cast to it, as
``nfhep.Engine.log_prob`` casts them); one event at a time, so each value agrees with
``Engine.log_prob`` over the whole tree to float rounding (tested: <= 2e-5 relative in float32, 1e-10 in
float64), not bitwise (the engine's batched path groups events in blocks of 256). Outside the support the
value is ``-inf``; a NaN input gives NaN. For bitwise-reproducible friend trees of whole files use
``nfhep eval`` or ``macros/eval_ntuple.C``.

Thread-safety: the cached model is immutable; each call leases a one-event workspace from a pool owned by
the model (a mutex around the lease only), so any number of RDataFrame slots, implicit-MT threads, Dask
worker threads and concurrent event loops may evaluate it at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["setup", "declaration", "define_logp", "is_distributed", "loaded_models"]

#: Include guard of the declared code (bump the suffix when the code changes incompatibly).
_GUARD = "NFHEP_RDF_DECLARED_V1"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Column types read as one number per event (RDataFrame's spelling of TTree/RNTuple leaves).
_NUMERIC = {
    "Float_t", "Double_t", "Int_t", "UInt_t", "Long64_t", "ULong64_t", "Long_t", "ULong_t", "Short_t",
    "UShort_t", "Char_t", "UChar_t", "Bool_t", "Float16_t", "Double32_t", "float", "double", "int",
    "unsigned int", "long", "unsigned long", "long long", "unsigned long long", "short", "unsigned short",
    "char", "signed char", "unsigned char", "bool", "std::int8_t", "std::uint8_t", "std::int16_t",
    "std::uint16_t", "std::int32_t", "std::uint32_t", "std::int64_t", "std::uint64_t", "int8_t",
    "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t",
}  # fmt: skip

# what this process declared: (include_dir, library) or None
_declared: tuple[str, str] | None = None

_CODE = r"""
#ifndef @GUARD@
#define @GUARD@
#include <TSystem.h>

#include <stdexcept>
#include <string>
// A process without the nfhep installation under these paths (a worker that does not share it) still
// compiles this code, so its tasks fail with the message of nfhep_rdf::unavailable() instead of an
// anonymous JIT error.
#if __has_include("@INC@/nfhep/root.hpp") && __has_include("@LIB@")
#define NFHEP_RDF_READY_V1
#pragma cling add_include_path("@INC@")
#pragma cling load("@LIB@")
#include "nfhep/root.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// nfhep.rdf (python/nfhep/rdf.py): models loaded once per process, evaluated one event at a time from
// JIT-compiled RDataFrame expressions, thread-safe (a pool of one-event workspaces per model).
namespace nfhep_rdf {

template <typename T>
class Model {
 public:
  explicit Model(nfhep::Flow flow)
      : flow_(std::move(flow)), d_(flow_.num_features()), c_(flow_.num_context()) {}

  /// log p(x | c) of one event: the D feature values then the C context values, in model order.
  template <typename... A>
  T log_prob(A... a) const {
    constexpr std::size_t n = sizeof...(A);
    if (n != d_ + c_) {
      std::ostringstream os;
      os << "nfhep.rdf: the model '" << flow_.path() << "' takes " << d_ + c_ << " input values ("
         << nfhep::root::detail::join(nfhep::root::detail::columns(flow_)) << "), the expression passes "
         << n;
      throw std::invalid_argument(os.str());
    }
    T v[n == 0 ? 1 : n] = {static_cast<T>(a)...};
    Lease lease(*this);
    T out;
    flow_.log_prob(lease.ws(), v, 1, &out, c_ ? v + d_ : nullptr);
    return out;
  }
  const nfhep::Flow& flow() const { return flow_; }

 private:
  class Lease {  // a one-event workspace taken from the model's pool for one call
   public:
    explicit Lease(const Model& m) : m_(m) {
      {
        std::lock_guard<std::mutex> g(m_.mutex_);
        if (!m_.free_.empty()) {
          ws_ = std::move(m_.free_.back());
          m_.free_.pop_back();
        }
      }
      if (!ws_) ws_.reset(new nfhep::Workspace(m_.flow_.make_workspace(1)));
    }
    ~Lease() {
      std::lock_guard<std::mutex> g(m_.mutex_);
      m_.free_.push_back(std::move(ws_));
    }
    nfhep::Workspace& ws() { return *ws_; }

   private:
    const Model& m_;
    std::unique_ptr<nfhep::Workspace> ws_;
  };
  nfhep::Flow flow_;
  std::size_t d_, c_;
  mutable std::mutex mutex_;
  mutable std::vector<std::unique_ptr<nfhep::Workspace>> free_;
};

namespace detail {
inline std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<std::string>& records() {  // "path\tchecksum\tdtype\thost\tpid", one per load
  static std::vector<std::string> r;
  return r;
}
}  // namespace detail

/// The model at `path` with tensor checksum `checksum`, loaded on first use in this process and kept.
/// Throws nfhep::FormatError for a bad file, std::runtime_error when the file this process reads has
/// another checksum (the file changed, or this worker sees another file under that path).
template <typename T>
Model<T>& model(const char* path, const char* checksum) {
  static std::map<std::string, std::unique_ptr<Model<T>>> cache;
  const std::string key = std::string(path) + '\n' + checksum;
  std::lock_guard<std::mutex> g(detail::registry_mutex());
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  nfhep::Flow flow = nfhep::Flow::load(path);
  const std::string host = gSystem->HostName() ? gSystem->HostName() : "?";
  if (flow.checksum() != checksum) {
    throw std::runtime_error(std::string("nfhep.rdf: the model file '") + path + "' read by process " +
                             std::to_string(gSystem->GetPid()) + " on host " + host +
                             " has tensor checksum " + flow.checksum() +
                             ", but the column was defined with " + checksum +
                             " (the file changed after define_logp, or this worker sees another file under "
                             "that path: the model file must be the same on every worker)");
  }
  if (flow.is_float32() != std::is_same<T, float>::value) {
    throw std::runtime_error(std::string("nfhep.rdf: the model file '") + path + "' is " +
                             (flow.is_float32() ? "float32" : "float64") + ", the column was defined as " +
                             (std::is_same<T, float>::value ? "float" : "double"));
  }
  detail::records().push_back(std::string(path) + "\t" + checksum + "\t" +
                              (flow.is_float32() ? "float32" : "float64") + "\t" + host + "\t" +
                              std::to_string(gSystem->GetPid()));
  auto ins = cache.emplace(key, std::unique_ptr<Model<T>>(new Model<T>(std::move(flow))));
  return *ins.first->second;
}

/// The models this process loaded (one line per load, see detail::records).
inline std::string loaded() {
  std::lock_guard<std::mutex> g(detail::registry_mutex());
  std::string s;
  for (const auto& r : detail::records()) s += r + "\n";
  return s;
}
inline bool ready() { return true; }

}  // namespace nfhep_rdf
#else
namespace nfhep_rdf {
inline std::string loaded() { return ""; }
inline bool ready() { return false; }
[[noreturn]] inline void unavailable() {
  throw std::runtime_error(std::string("nfhep.rdf: process ") + std::to_string(gSystem->GetPid()) +
                           " on host " + (gSystem->HostName() ? gSystem->HostName() : "?") +
                           " cannot use nfhep: @INC@/nfhep/root.hpp or @LIB@ does not exist there; every "
                           "worker needs the nfhep installation under the same path as the client (a shared "
                           "environment, container or CVMFS area)");
}
}  // namespace nfhep_rdf
#endif
#endif
"""


def _import_root() -> Any:
    try:
        with warnings.catch_warnings():
            # the pip build of ROOT warns on import that it is an alpha release
            warnings.filterwarnings("ignore", message=r"(?s).*alpha stage", category=UserWarning)
            import ROOT
    except ImportError as err:
        raise ImportError(
            f"nfhep.rdf needs ROOT's Python bindings (PyROOT), which cannot be imported ({err}); install "
            "ROOT (`pip install root`, conda-forge `root`, or source thisroot.sh of a ROOT build)"
        ) from err
    return ROOT


def _paths(include_dir: str | os.PathLike | None, library: str | os.PathLike | None) -> tuple[str, str]:
    from .cli import config

    inc = os.path.abspath(os.fspath(include_dir)) if include_dir is not None else str(config.include_dir())
    lib = os.path.abspath(os.fspath(library)) if library is not None else str(config.library_path())
    if not os.path.isfile(os.path.join(inc, "nfhep", "root.hpp")):
        raise FileNotFoundError(
            f"nfhep.rdf: include_dir {inc!r} holds no nfhep/root.hpp (a broken nfhep install? "
            "`nfhep config --includedir` names the directory of the installed headers)"
        )
    if not os.path.isfile(lib):
        raise FileNotFoundError(
            f"nfhep.rdf: library {lib!r} does not exist (`nfhep config --library` names the installed "
            "libnfhep_core.so)"
        )
    for what, p in (("include_dir", inc), ("library", lib)):
        if '"' in p or "\\" in p or "\n" in p:
            raise ValueError(f"nfhep.rdf: {what} {p!r} contains a quote, backslash or newline")
    return inc, lib


def declaration(
    *, include_dir: str | os.PathLike | None = None, library: str | os.PathLike | None = None
) -> str:
    """The C++ code :func:`setup` declares (and :func:`define_logp` sends to distributed workers).

    It adds ``include_dir`` to the interpreter's include path, loads ``library`` by absolute path,
    includes ``nfhep/root.hpp`` and defines ``nfhep_rdf::model<T>(path, checksum)`` (the per-process model
    cache) and ``nfhep_rdf::Model<T>::log_prob(values...)``; guarded, so declaring it twice is harmless.
    Useful on its own to call ``ROOT.RDF.Distributed.DistributeCppCode`` yourself or to paste into a macro.

    Parameters
    ----------
    include_dir, library : path, optional
        The nfhep headers and ``libnfhep_core.so`` (default: those of this installation,
        ``nfhep config --includedir`` / ``--library``). They must exist here.

    Returns
    -------
    str
    """
    inc, lib = _paths(include_dir, library)
    return _CODE.replace("@GUARD@", _GUARD).replace("@INC@", inc).replace("@LIB@", lib).strip() + "\n"


def setup(*, include_dir: str | os.PathLike | None = None, library: str | os.PathLike | None = None) -> None:
    """Load nfhep's engine and ROOT header into ROOT's interpreter of this process (idempotent).

    Afterwards C++ code given to ``ROOT.gInterpreter.Declare`` or used in RDataFrame expressions can use
    ``nfhep::Flow`` and ``nfhep::root::FlowFunctor`` / ``FlowFunctorRVec`` / ``RReader`` / ``EntryBatch``
    (``nfhep/root.hpp``) and the helpers of :func:`declaration`. The Python equivalent of
    ``macros/nfhep_setup.C``.

    Parameters
    ----------
    include_dir, library : path, optional
        As in :func:`declaration` (default: this installation's).

    Raises
    ------
    ImportError
        If ROOT's Python bindings cannot be imported (the message says how to install them).
    FileNotFoundError
        If the headers or the library are missing.
    RuntimeError
        If cling rejects the declarations (the message names the paths), or if this process already
        loaded nfhep from other paths (one libnfhep_core per process).
    """
    global _declared
    inc, lib = _paths(include_dir, library)
    if _declared is not None:
        if _declared != (inc, lib):
            raise RuntimeError(
                f"nfhep.rdf.setup: this process already loaded nfhep from include_dir {_declared[0]!r}, "
                f"library {_declared[1]!r}; it cannot load another one ({inc!r}, {lib!r})"
            )
        return
    ROOT = _import_root()
    ROOT.gROOT.SetBatch(True)
    if not ROOT.gInterpreter.Declare(declaration(include_dir=inc, library=lib)) or not ROOT.nfhep_rdf.ready():
        raise RuntimeError(
            f"nfhep.rdf.setup: ROOT's interpreter could not load nfhep (headers {inc}/nfhep/root.hpp, "
            f"library {lib}); its error messages are printed above"
        )
    _declared = (inc, lib)


def is_distributed(df: Any) -> bool:
    """True for a distributed RDataFrame (``ROOT.RDataFrame(..., executor=client)`` or a node derived
    from one), False for a local ``ROOT.RDataFrame`` / ``RNode``."""
    return type(df).__module__.startswith("ROOT._distrdf")


def _cpp_string(s: str, what: str) -> str:
    if "\n" in s or ')nfhep"' in s:
        raise ValueError(f"define_logp: {what} {s!r} cannot be passed to C++ (newline or ')nfhep\"')")
    return f'R"nfhep({s})nfhep"'


def define_logp(
    df: Any,
    model_path: str | os.PathLike,
    columns: Sequence[str] | Mapping[str, str] | None = None,
    name: str = "nf_logp",
) -> Any:
    r"""Define column ``name`` = :math:`\log p(x \mid c)` of a model file on an RDataFrame.

    Parameters
    ----------
    df : ROOT.RDataFrame, ROOT.RDF.RNode or a distributed RDataFrame
        A local data frame (any node: after ``Define``/``Filter`` too; under ``ROOT.EnableImplicitMT()``
        as well) or a distributed one (``ROOT.RDataFrame(tree, files, executor=client)`` with a
        ``dask.distributed.Client``; one task per entry range, ``npartitions=`` ranges).
    model_path : path
        An nfhep model file. It is opened here (to read its inputs, dtype and checksum) and by every
        process that runs the event loop: distributed workers must see the same file under the same
        absolute path.
    columns : sequence of str, or mapping, optional
        The data frame's columns (or C++ expressions of them) holding the model's inputs: a sequence in
        model order (features, then context features), or a mapping ``{model input: column}``; inputs not
        in the mapping are read from the column of the same name. Default: the columns named like the
        model's features and context features. Columns must hold one number per event (any numeric type,
        cast to the model's dtype).
    name : str
        The new column (a C++ identifier that is not a column yet).

    Returns
    -------
    node
        The data frame with the new column (of type ``float`` for a float32 model, ``double`` for
        float64), lazily evaluated like any ``Define``.

    Raises
    ------
    FileNotFoundError, nfhep.FormatError
        A missing or invalid model file.
    ValueError
        A bad ``name``, a wrong number of columns, a column that does not exist, an unknown model input in
        the mapping.
    TypeError
        A column that does not hold one number per event.

    Notes
    -----
    At event-loop time a worker that reads a different model file under ``model_path`` (other checksum),
    or cannot read it, raises a C++ ``std::runtime_error`` / ``nfhep::FormatError`` naming the path, the
    host and the process (distributed RDataFrame re-raises it as ``RuntimeError``).
    """
    from .engine import Engine

    path = os.path.abspath(os.fspath(model_path))
    eng = Engine(path)  # FileNotFoundError / FormatError, with the path
    inputs = [*eng.features, *eng.context_features]
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"define_logp: name must be a C++ identifier, got {name!r}")
    if columns is None:
        cols = list(inputs)
    elif isinstance(columns, Mapping):
        unknown = sorted(set(columns) - set(inputs))
        if unknown:
            raise ValueError(
                f"define_logp: columns maps {unknown}, which are not inputs of the model {path!r} "
                f"(inputs: {', '.join(inputs)})"
            )
        cols = [str(columns.get(k, k)) for k in inputs]
    elif isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(
            "define_logp: columns must be a sequence of column names or a mapping, "
            f"got {type(columns).__name__}"
        )
    else:
        cols = [str(c) for c in columns]
        if len(cols) != len(inputs):
            raise ValueError(
                f"define_logp: the model {path!r} takes {len(inputs)} input columns "
                f"({', '.join(inputs)}), got {len(cols)} ({', '.join(cols)})"
            )

    if _declared is None:  # this process (the client of a distributed run compiles the expression too)
        setup()
    ROOT = _import_root()
    if is_distributed(df):
        # every task declares the code on its worker before it builds its data frame (guarded: once per
        # process); registered in this process's distributed-RDF backend for all later runs
        assert _declared is not None
        ROOT.RDF.Distributed.DistributeCppCode(declaration(include_dir=_declared[0], library=_declared[1]))

    have = {str(c) for c in df.GetColumnNames()}
    if name in have:
        raise ValueError(f"define_logp: the data frame already has a column {name!r}; choose another name")
    for inp, col in zip(inputs, cols, strict=True):
        if _IDENT.match(col) and col not in have:
            role = "context feature" if inp in eng.context_features else "feature"
            raise ValueError(
                f"define_logp: the model {path!r} reads its {role} {inp!r} from column {col!r}, which the "
                f"data frame does not have (columns: {', '.join(sorted(have))}); pass columns= to map it"
            )
        if col in have:
            ctype = str(df.GetColumnType(col))
            if ctype not in _NUMERIC:
                raise TypeError(
                    f"define_logp: column {col!r} (model input {inp!r}) has type {ctype}; the model needs "
                    "one number per event (pass a C++ expression, e.g. 'v[0]', in columns=)"
                )
    fn, code = _model_code(path, eng.checksum, eng.dtype)
    if fn in have or "nfhep_rdf" in have:
        raise ValueError(f"define_logp: the data frame has a column named {fn!r} or 'nfhep_rdf'; rename it")
    if not ROOT.gInterpreter.Declare(code):
        raise RuntimeError(f"define_logp: ROOT's interpreter rejected the accessor of {path!r}:\n{code}")
    if is_distributed(df):
        ROOT.RDF.Distributed.DistributeCppCode(code)
    # RDataFrame replaces every identifier of an expression that names a column, also inside string
    # literals: the expression holds only the accessor's name and the columns, never the model's path
    return df.Define(name, f"::nfhep_rdf::{fn}({', '.join(f'({c})' for c in cols)})")


def _model_code(path: str, checksum: str, dtype: str) -> tuple[str, str]:
    """The name and C++ code of the accessor ``nfhep_rdf::<name>(values...)`` of one model file: it loads
    the model through the per-process cache on first call (a function-local static) and evaluates it."""
    t = "float" if dtype == "float32" else "double"
    key = hashlib.sha256(f"{path}\n{checksum}\n{t}".encode()).hexdigest()[:20]
    fn = f"nfhep_rdf_lp_{key}"
    code = (
        f"#ifndef NFHEP_RDF_LP_{key}\n#define NFHEP_RDF_LP_{key}\n"
        f"namespace nfhep_rdf {{\n"
        f"// log p of {path}\n"
        f"template <typename... A>\n{t} {fn}(A... a) {{\n"
        "#ifdef NFHEP_RDF_READY_V1\n"
        f'  static const Model<{t}>& m = model<{t}>({_cpp_string(path, "model_path")}, "{checksum}");\n'
        f"  return m.log_prob(a...);\n"
        "#else\n"
        "  unavailable();\n"
        "#endif\n"
        f"}}\n}}  // namespace nfhep_rdf\n#endif\n"
    )
    return fn, code


def loaded_models() -> list[dict[str, Any]]:
    """The models :func:`define_logp` columns loaded in this process, one entry per load.

    Run it on Dask workers to check that each loaded a model once:
    ``client.run(nfhep.rdf.loaded_models)``.

    Returns
    -------
    list of dict
        ``path``, ``checksum``, ``dtype``, ``host``, ``pid``; empty when nothing was loaded (or nfhep was
        never declared in this process's ROOT).
    """
    if _declared is None and not _root_has_helpers():
        return []
    ROOT = _import_root()
    out = []
    for line in str(ROOT.nfhep_rdf.loaded()).splitlines():
        path, checksum, dtype, host, pid = line.split("\t")
        out.append({"path": path, "checksum": checksum, "dtype": dtype, "host": host, "pid": int(pid)})
    return out


def _root_has_helpers() -> bool:
    """Whether this process's ROOT interpreter has the declarations (e.g. a Dask worker that ran a task)."""
    import sys

    if "ROOT" not in sys.modules:
        return False
    try:
        sys.modules["ROOT"].nfhep_rdf  # noqa: B018 (raises AttributeError when not declared)
    except AttributeError:
        return False
    return True

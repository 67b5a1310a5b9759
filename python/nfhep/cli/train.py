"""``nfhep train``: learn a normalizing flow from ROOT ntuples and write a model file."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COMMAND = "train"
HELP = "train a normalizing flow on ROOT ntuples and write a .safetensors model file"
DESCRIPTION = """\
Train a normalizing flow (MAF, RealNVP, C-RQS or A-RQS) on branches of ROOT ntuples by maximum
likelihood, and write the model file (weights + configuration + preprocessing + provenance, see
docs/model-format.md) and, next to it, the training history as JSON (MODEL.history.json).

Preprocessing is chosen per feature from the training data (printed as a table at the start; only the
table: --explain-preprocessing): positive heavy tails and sharp lower edges get a log, bounded features a
logit, azimuthal angles (names with 'phi' filling [-pi, pi]) a periodic wrap, features with <= 20
distinct values (b-tags, multiplicities) are dequantised and sampled back onto their values, a spike at
one value (zero-padded jets) gets a cell of its own; for maf and realnvp every marginal is then
Gaussianised through its quantiles, for crqs and arqs only the mixed ones (--quantile / --no-quantile);
last, standardisation. Declare kinds
with --preprocess FILE.toml, --periodic, --discrete, --bounds, --log-features; --no-auto-preprocess gives
plain standardisation. All of it is stored in the model file
and evaluated by the C++ engine too (docs/model-format.md, docs/preprocessing.md).

The network width and the epoch cap are chosen from the number of training events unless given
(--no-size-defaults keeps the papers' 3x128 and 200): 2x32 below 20,000 events, 3x64 below 200,000,
3x128 above; the cap grows so small samples get at least ~5000 optimiser steps; a MAF gets 8
bijectors below 200,000 events, and below 20,000 events an ensemble of 3 flows is trained and saved as
their equal-weight mixture (--ensemble M; nfhep.defaults).

Otherwise the defaults follow the NFlikelihood papers (arXiv:2309.09743): A-RQS with 2 bijectors,
Adam lr 1e-3, batch 512, learning rate x0.2 on plateaus, early stopping with restored best weights,
20% validation split. Their best models:

  likelihood                  dims  flow   bijectors hidden  knots range  L1    patience epochs
  LHC-like toy                95    MAF    2         3x64    -     -      0     20       200
  ElectroWeak fit             40    A-RQS  2         3x128   4     6      0     20       800
  Flavor fit                  89    A-RQS  2         3x1024  8     5      1e-4  50       12000

Options can also come from a TOML or YAML file (--config); flags on the command line override it. Keys
are the long option names (dashes or underscores), e.g.

  data = ["run*.root:events"]
  features = ["px", "py", "pz"]
  flow = "arqs"
  hidden = "3x128"
  epochs = 200

examples:
  nfhep train data.root:events --features px,py,pz -o model.safetensors
  nfhep train 'runs/*.root' --features mjj,ptj --context mass --selection 'njet >= 2 && ptj > 30' \\
      --flow crqs --bijectors 5 --hidden 3x256 --knots 8 --range 6 --epochs 500 -o m.safetensors
  nfhep train --config train.toml --epochs 10      # the file's settings, 10 epochs
  nfhep train data.root --features a,b --stream --nproc 2 -o m.safetensors   # 2 data-parallel ranks
  torchrun --nproc-per-node 4 -m nfhep train data.root --features a,b -o m.safetensors

Data-parallel training (--nproc N, or under torchrun): N processes (gloo backend, CPU) each train on
their share of the data (--stream: chunks k with k % N == rank; in memory: a contiguous block of rows)
with gradients summed over the ranks, so a step equals the single-process step on the N shares'
concatenated batch; --batch-size is the global batch. Only rank 0 prints, shows progress and writes the
model and history. A rank that fails stops the others (non-zero exit); a collective waits at most
NFHEP_DIST_TIMEOUT seconds (default 300). See docs/flows.md.
"""

__all__ = ["TRAIN_DEFAULTS", "resolve_options", "train_from_options", "history_path"]

#: Built-in defaults (the papers' common choices); None = "not set".
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": None,
    "features": None,
    "context": None,
    "weights": None,
    "selection": None,
    "drop_bad": False,
    "stream": False,
    "step_size": 100_000,
    "flow": "arqs",
    "bijectors": 2,
    "hidden": "3x128",
    "knots": 8,
    "range": 5.0,
    "activation": "relu",
    "permutation": "reverse",
    "log_features": None,
    "bounds": None,
    "auto_preprocess": True,
    "quantile": None,
    "relative_angles": True,
    "preprocess": None,
    "periodic": None,
    "discrete": None,
    "explain_preprocessing": False,
    "size_defaults": True,
    "dropout": 0.0,
    "batch_norm": False,
    "actnorm": False,
    "dtype": "float32",
    "epochs": 200,
    "patience": 20,
    "batch_size": 512,
    "lr": 1e-3,
    "lr_factor": 0.2,
    "lr_patience": 10,
    "l1": 0.0,
    "l2": 0.0,
    "clip_grad_norm": None,
    "val_split": 0.2,
    "seed": 0,
    "ensemble": 1,
    "output": None,
    "quiet": False,
}

_LIST_KEYS = {"data", "features", "context", "log_features", "periodic", "discrete"}

#: Options that ``--size-defaults`` (on by default) chooses from the number of training events unless given.
SIZE_KEYS = ("hidden", "epochs", "bijectors", "ensemble")


def _split_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, Sequence):
        out: list[str] = []
        for v in value:
            out.extend(_split_list(v) or [])
        return out
    raise TypeError(f"expected a list of names, got {value!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # unset flags stay absent, so config-file values are not overridden
    g = p.add_argument_group("input")
    g.add_argument(
        "data",
        nargs="*",
        default=S,
        help="ROOT inputs: file.root, file.root:tree, glob patterns ('runs/*.root:events'); "
        "the tree is auto-detected when a file has exactly one",
    )
    g.add_argument(
        "--features", default=S, help="comma-separated branches to learn, e.g. px,py,pz (required)"
    )
    g.add_argument(
        "--context",
        default=S,
        help="comma-separated branches to condition on (conditional flow), e.g. a model parameter",
    )
    g.add_argument("--weights", default=S, help="branch of per-event weights (weighted maximum likelihood)")
    g.add_argument(
        "--selection", default=S, help="cut, ROOT style ('njet >= 2 && abs(eta) < 2.5') or uproot style"
    )
    g.add_argument(
        "--drop-bad",
        action="store_true",
        default=S,
        help="drop rows with NaN/inf values (count reported) instead of stopping with an error",
    )
    g.add_argument(
        "--stream",
        action="store_true",
        default=S,
        help="stream the inputs chunk by chunk instead of loading them (data larger than memory)",
    )
    g.add_argument("--step-size", type=int, default=S, help="entries per chunk when reading (default 100000)")
    g.add_argument(
        "--config", default=None, help="TOML (.toml) or YAML (.yaml/.yml) file with any of these options"
    )

    g = p.add_argument_group("flow (papers' defaults in brackets)")
    g.add_argument(
        "--flow",
        choices=("maf", "realnvp", "crqs", "arqs"),
        default=S,
        help="family: maf (affine autoregressive, arXiv:1705.07057), realnvp (affine coupling, "
        "arXiv:1605.08803), crqs / arqs (coupling / autoregressive rational-quadratic "
        "spline, arXiv:1906.04032) [arqs]",
    )
    g.add_argument(
        "--bijectors", type=int, default=S, help="number of flow layers [2; a MAF: 8 below 200k events]"
    )
    g.add_argument(
        "--hidden",
        default=S,
        help="conditioner network, LAYERSxUNITS or comma list: 3x64 (LHC toy), 3x128 (EW fit), "
        "3x1024 (flavor fit) [from the data size: 2x32 below 20k events, 3x64 below 200k, else 3x128]",
    )
    g.add_argument("--knots", type=int, default=S, help="spline bins K (crqs/arqs): 4 (EW), 8 (flavor) [8]")
    g.add_argument(
        "--range",
        type=float,
        default=S,
        help="spline half-width B, identity outside [-B, B] in standardised units: 6 (EW), 5 (flavor) [5]",
    )
    g.add_argument("--activation", default=S, help="hidden-layer activation [relu]")
    g.add_argument("--permutation", default=S, help="permutation between layers: reverse or random [reverse]")
    g.add_argument(
        "--log-features",
        default=S,
        help="comma-separated strictly positive features to log-transform before standardising",
    )
    g.add_argument(
        "--bounds",
        default=S,
        help="physical bounds NAME=LOW:HIGH,... (empty side = open, e.g. pt=0:,eta=-2.5:2.5): the feature "
        "is mapped by a log/logit before standardising, samples never leave the bounds",
    )
    g = p.add_argument_group("preprocessing (chosen per feature from the data unless declared)")
    g.add_argument(
        "--explain-preprocessing",
        action="store_true",
        default=S,
        help="read the data, print the per-feature preprocessing table (class, transform, why) and exit",
    )
    g.add_argument(
        "--preprocess",
        default=S,
        metavar="FILE.toml",
        help="declared kinds: [features.NAME] tables with kind = continuous | positive | bounded | lower | "
        "upper | periodic | discrete | mixed | auto, and low/high, period, values, spike, quantile "
        "(see docs/preprocessing.md); they override the automatic choice",
    )
    g.add_argument(
        "--periodic", default=S, help="comma-separated features periodic on [-pi, pi) (e.g. lep_phi,jet_phi)"
    )
    g.add_argument(
        "--discrete", default=S, help="comma-separated features with a few discrete values (counts, tags)"
    )
    g.add_argument(
        "--no-auto-preprocess",
        dest="auto_preprocess",
        action="store_false",
        default=S,
        help="plain standardisation (plus --bounds/--log-features) instead of the per-feature analysis",
    )
    g.add_argument(
        "--quantile",
        dest="quantile",
        action="store_true",
        default=S,
        help="follow each feature's transform by a Gaussianising quantile map [on for maf and realnvp]",
    )
    g.add_argument(
        "--no-quantile",
        dest="quantile",
        action="store_false",
        default=S,
        help="no quantile map at all [crqs and arqs: only on mixed (spike + continuum) features]",
    )
    g.add_argument(
        "--no-relative-angles",
        dest="relative_angles",
        action="store_false",
        default=S,
        help="keep every periodic feature absolute [by default an angle whose difference to another "
        "angle is concentrated, e.g. the MET's phi against the lepton's, is learnt as that wrapped "
        "difference; per feature: relative_to in --preprocess]",
    )
    g.add_argument(
        "--no-size-defaults",
        dest="size_defaults",
        action="store_false",
        default=S,
        help="keep hidden 3x128, 200 epochs, 2 bijectors and one flow (no ensemble) whatever the number "
        "of events",
    )
    g = p.add_argument_group("flow (continued)")
    g.add_argument("--dropout", type=float, default=S, help="dropout in the conditioner hidden layers [0]")
    g.add_argument("--batch-norm", action="store_true", default=S, help="batch norm in conditioners [off]")
    g.add_argument("--actnorm", action="store_true", default=S, help="ActNorm before every bijector [off]")
    g.add_argument("--dtype", choices=("float32", "float64"), default=S, help="weights dtype [float32]")

    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=int,
        default=S,
        help="maximum epochs: 200 (LHC toy), 800 (EW) [200, more for small data: nfhep.defaults]",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=S,
        help="early stopping: epochs without validation improvement; best weights are restored [20]",
    )
    g.add_argument("--batch-size", type=int, default=S, help="mini-batch size [512]")
    g.add_argument("--lr", type=float, default=S, help="Adam learning rate [1e-3]")
    g.add_argument("--lr-factor", type=float, default=S, help="learning-rate factor on plateau [0.2]")
    g.add_argument(
        "--lr-patience", type=int, default=S, help="epochs without improvement before reducing lr [10]"
    )
    g.add_argument(
        "--l1", type=float, default=S, help="L1 penalty on conditioner weights: 1e-4 (flavor fit) [0]"
    )
    g.add_argument("--l2", type=float, default=S, help="L2 penalty on conditioner weights [0]")
    g.add_argument("--clip-grad-norm", type=float, default=S, help="clip the gradient norm (off by default)")
    g.add_argument("--val-split", type=float, default=S, help="validation fraction, random and seeded [0.2]")
    g.add_argument("--seed", type=int, default=S, help="seed for weights, split and shuffling [0]")
    g.add_argument(
        "--ensemble",
        type=int,
        default=S,
        metavar="M",
        help="train M flows (seeds SEED..SEED+M-1, each its own validation split, one shared "
        "preprocessing) and save their equal-weight mixture: the density is the average of the M "
        "densities, samples come from the mixture, the spread of the M log-densities estimates the "
        "uncertainty (nfhep eval writes it as <prefix>logp_std). [3 below 20,000 events, else 1: "
        "nfhep.defaults]",
    )
    g.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="data-parallel training on N local processes (torch.distributed, gloo); 1 = in this "
        "process [1]. Under torchrun leave it out: RANK/WORLD_SIZE come from the environment",
    )

    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default=S, help="model file to write (e.g. model.safetensors; required)")
    g.add_argument("-q", "--quiet", action="store_true", default=S, help="no progress bar")


def _read_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config file {path!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        with open(p, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"--config {path!r}: invalid TOML: {err}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        with open(p, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as err:
                raise ValueError(f"--config {path!r}: invalid YAML: {err}") from None
        data = data or {}
    else:
        raise ValueError(f"--config {path!r}: use a .toml, .yaml or .yml file")
    if not isinstance(data, dict):
        raise ValueError(f"--config {path!r}: expected a table/mapping of options at top level")
    if isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]  # allow a [train] table
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = str(key).replace("-", "_")
        if k not in TRAIN_DEFAULTS:
            raise ValueError(
                f"--config {path!r}: unknown option {key!r}; known: "
                + ", ".join(sorted(s.replace("_", "-") for s in TRAIN_DEFAULTS))
            )
        out[k] = value
    return out


def resolve_options(args: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """Merge built-in defaults < config file < command line; validate; return the option dict."""
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    given.pop("_run", None)
    given.pop("command", None)
    cfg_path = given.pop("config", None)
    opts = dict(TRAIN_DEFAULTS)
    explicit: set[str] = set(given.pop("_explicit", ()) or ())
    if cfg_path:
        cfg = _read_config(cfg_path)
        opts.update(cfg)
        explicit |= set(cfg)
    for k, v in given.items():
        if k in TRAIN_DEFAULTS:
            if k == "data" and v == []:
                continue
            opts[k] = v
            explicit.add(k)
    for k in _LIST_KEYS:
        opts[k] = _split_list(opts[k])
    if not opts["data"]:
        raise ValueError("no input data: give ROOT files (DATA...) or 'data' in --config")
    if not opts["features"]:
        raise ValueError("--features is required (comma-separated branch names)")
    if not opts["output"] and not opts.get("explain_preprocessing"):
        raise ValueError("-o/--output is required (the model file to write, e.g. model.safetensors)")
    if opts["flow"] not in ("maf", "realnvp", "crqs", "arqs"):
        raise ValueError(f"--flow must be maf, realnvp, crqs or arqs, got {opts['flow']!r}")
    for k in ("bijectors", "epochs", "batch_size", "knots", "step_size", "ensemble"):
        if not isinstance(opts[k], int) or isinstance(opts[k], bool) or opts[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {opts[k]!r}")
    for k in ("patience", "lr_patience", "seed"):
        if not isinstance(opts[k], int) or isinstance(opts[k], bool) or opts[k] < 0:
            raise ValueError(f"--{k.replace('_', '-')} must be a non-negative integer, got {opts[k]!r}")
    if not 0.0 <= float(opts["val_split"]) < 1.0:
        raise ValueError(f"--val-split must be in [0, 1), got {opts['val_split']!r}")
    for k in ("lr", "range"):
        if not float(opts[k]) > 0:
            raise ValueError(f"--{k} must be positive, got {opts[k]!r}")
    if not 0.0 < float(opts["lr_factor"]) < 1.0:
        raise ValueError(f"--lr-factor must be in (0, 1), got {opts['lr_factor']!r}")
    for k in ("l1", "l2"):
        if float(opts[k]) < 0:
            raise ValueError(f"--{k} must be >= 0, got {opts[k]!r}")
    from nfhep.flows import MAX_MEMBERS

    if opts["ensemble"] > MAX_MEMBERS:
        raise ValueError(f"--ensemble must be at most {MAX_MEMBERS}, got {opts['ensemble']!r}")
    if not isinstance(opts["relative_angles"], bool):
        raise ValueError(f"option 'relative_angles' must be true or false, got {opts['relative_angles']!r}")
    if opts["dtype"] not in ("float32", "float64"):
        raise ValueError(f"--dtype must be float32 or float64, got {opts['dtype']!r}")
    opts["hidden"] = str(opts["hidden"])
    opts["_explicit"] = sorted(explicit & set(TRAIN_DEFAULTS))
    return opts


def history_path(model_path: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.history.json`` (next to the model)."""
    p = Path(model_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".history.json")


def flow_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :meth:`nfhep.model.Model.create` for these options."""
    from nfhep.flows import parse_hidden

    out: dict[str, Any] = {
        "bijectors": int(opts["bijectors"]),
        "hidden": parse_hidden(opts["hidden"]),
        "activation": opts["activation"],
        "permutation": opts["permutation"],
        "seed": int(opts["seed"]),
        "dropout": float(opts["dropout"]),
        "batch_norm": bool(opts["batch_norm"]),
        "actnorm": bool(opts["actnorm"]),
    }
    if opts["flow"] in ("crqs", "arqs"):
        out["knots"] = int(opts["knots"])
        out["range"] = float(opts["range"])
    if not opts.get("auto_preprocess", False):
        if opts.get("log_features"):
            out["log_features"] = list(opts["log_features"])
        if opts.get("bounds"):
            out["bounds"] = parse_bounds(opts["bounds"])
    return out


def declared_preprocessing(opts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-feature kinds declared by ``--preprocess``, ``--periodic``, ``--discrete``, ``--bounds`` and
    ``--log-features`` (later ones override earlier ones for the same feature)."""
    from nfhep.feature_analysis import load_preprocess_config

    out: dict[str, dict[str, Any]] = {}
    if opts.get("preprocess"):
        out.update(load_preprocess_config(str(opts["preprocess"])))
    for name in opts.get("periodic") or ():
        out[name] = {"kind": "periodic"}
    for name in opts.get("discrete") or ():
        out[name] = {"kind": "discrete"}
    for name, (lo, hi) in parse_bounds(opts["bounds"]).items() if opts.get("bounds") else ():
        kind = "bounded" if lo is not None and hi is not None else ("lower" if lo is not None else "upper")
        out[name] = {"kind": kind, "low": lo, "high": hi}
    for name in opts.get("log_features") or ():
        out[name] = {"kind": "positive"}
    feats = set(opts["features"])
    unknown = sorted(set(out) - feats)
    if unknown:
        raise ValueError(f"preprocessing declared for {unknown}, which are not among --features")
    return out


def quantile_default(opts: Mapping[str, Any]) -> bool | str:
    """Which features get a Gaussianising quantile map: as given (``--quantile``/``--no-quantile``), else
    all for the affine families and only the mixed (spike + continuum) ones for the spline families.

    Measured on 5,000 events of ROOT's 28-feature HIGGS sample: they lift MAF's median KS p-value from
    0.003 to ~0.1, but cost A-RQS (0.41 -> 0.09: a piecewise-linear map gives the spline flow a density
    with kinks to learn), see benchmarks/quality/REAL.md. A mixed feature is the exception: its spike
    cell lies below the continuum's smallest value (far below for a log-mapped mass with a long left
    tail), so standardisation squeezes the continuum into a narrow band that the splines' bins cannot
    resolve, and samples leak far beyond it. On the collider toy (A-RQS, 5,000 events, four seeds) the
    maps on mjj and jet2_pt only took the median KS p from 0.122 to 0.170 and the SWD ratio from 1.91x
    to 1.34x (a single sample of mjj had been drawn at 1,900 standard deviations).
    """
    q = opts.get("quantile")
    if q is None:
        return True if opts["flow"] in ("maf", "realnvp") else "mixed"
    if isinstance(q, str):  # e.g. quantile = "mixed" in a --config file
        if q.strip().lower() == "mixed":
            return "mixed"
        raise ValueError(f"option 'quantile' must be true, false or \"mixed\", got {q!r}")
    if not isinstance(q, (bool, int)):
        raise ValueError(f"option 'quantile' must be true, false or \"mixed\", got {q!r}")
    return bool(q)


def _analysis_sample(data: Any, stream: bool, limit: int = 200_000):
    """The rows the feature analysis looks at: all in memory, or the first chunks of a stream."""
    import numpy as np

    if not stream:
        return np.asarray(data.x)
    parts, n = [], 0
    for chunk in data.iter_chunks(None):
        parts.append(np.asarray(chunk["x"]))
        n += len(parts[-1])
        if n >= limit:
            break
    if not parts:
        raise ValueError("no rows to analyse (empty input after the selection)")
    return np.concatenate(parts)[:limit]


def parse_bounds(value: Any) -> dict[str, tuple[float | None, float | None]]:
    """``"pt=0:,eta=-2.5:2.5"`` (or a mapping ``{"pt": [0, None]}``) -> ``{"pt": (0.0, None), ...}``."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part or ":" not in part.split("=", 1)[1]:
                raise ValueError(f"--bounds: expected NAME=LOW:HIGH, got {part!r}")
            name, rng = part.split("=", 1)
            items.append((name.strip(), rng.split(":", 1)))
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, pair in items:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"--bounds: {name!r} needs (low, high), got {pair!r}")
        lim: list[float | None] = []
        for v in pair:
            if v is None or (isinstance(v, str) and v.strip() in ("", "inf", "-inf", "+inf")):
                lim.append(None)
                continue
            try:
                lim.append(float(v))
            except (TypeError, ValueError):
                raise ValueError(f"--bounds: {name!r}: {v!r} is not a number") from None
        out[name] = (lim[0], lim[1])
    return out


def fit_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`nfhep.train.fit` for these options."""
    return {
        "epochs": int(opts["epochs"]),
        "batch_size": int(opts["batch_size"]),
        "lr": float(opts["lr"]),
        "patience": int(opts["patience"]),
        "lr_factor": float(opts["lr_factor"]),
        "lr_patience": int(opts["lr_patience"]),
        "validation_split": float(opts["val_split"]),
        "l1": float(opts["l1"]),
        "l2": float(opts["l2"]),
        "clip_grad_norm": None if opts["clip_grad_norm"] is None else float(opts["clip_grad_norm"]),
        "seed": int(opts["seed"]),
        "progress": False if opts["quiet"] else "auto",
    }


def choose_preprocessing(opts: Mapping[str, Any], sample: Any, *, stream: bool = False, out=None):
    """The automatic per-feature preprocessing of ``nfhep train`` for these options, from the training rows
    ``sample`` ``(N, D)``; prints the decision table to ``out``. Returns a
    :class:`~nfhep.feature_analysis.FeatureAnalysis` (``Model.create(preprocess=...)``)."""
    from nfhep.feature_analysis import analyze_features

    analysis = analyze_features(
        sample,
        list(opts["features"]),
        declared=declared_preprocessing(opts),
        quantile=quantile_default(opts),
        relative_angles=opts.get("relative_angles", True),
    )
    if out is not None:
        print(
            f"nfhep train: preprocessing chosen from {analysis.n_rows} rows"
            + (" (the first chunks)" if stream else "")
            + ":\n"
            + analysis.table(),
            file=out,
        )
    return analysis


def choose_size_defaults(opts: dict[str, Any], n_entries: int, explicit: Any = (), *, out=None) -> list[str]:
    """``nfhep train``'s data-size defaults (:func:`nfhep.defaults.data_size_defaults`) for ``n_entries``
    events before the validation split: updates ``opts`` in place (options in ``explicit`` stay), prints
    and returns one line per choice."""
    from nfhep.defaults import data_size_defaults

    n_train = max(1, int(round(n_entries * (1.0 - float(opts["val_split"])))))
    chosen, size_choice = data_size_defaults(
        n_train,
        len(opts["features"]),
        batch_size=int(opts["batch_size"]),
        explicit=set(explicit or ()),
        flow=opts["flow"],
    )
    opts.update(chosen)
    if out is not None:
        for line in size_choice:
            print(f"nfhep train: {line}", file=out)
    return size_choice


def train_from_options(opts: Mapping[str, Any], *, out=None, world=None) -> dict[str, Any]:
    """Read the data, build and fit the model, save it and its history. Returns a summary dict.

    With ``world`` (an :class:`nfhep.distributed.World` of an initialised process group of size > 1)
    this process trains its share of the data; only rank 0 prints and writes the files (the other
    ranks return ``"model": None``).
    """
    out = out if out is not None else sys.stdout
    import torch

    distributed = world is not None and world.size > 1
    rank0 = not distributed or world.rank == 0
    if not rank0:
        out = open(os.devnull, "w")  # noqa: SIM115 (closed with the process)

    from nfhep import io as nio
    from nfhep import modelfile
    from nfhep.model import Model
    from nfhep.train import fit

    t0 = time.perf_counter()
    output = Path(opts["output"] or ".")
    if opts["output"] and not output.resolve().parent.is_dir():
        raise FileNotFoundError(f"output directory {str(output.resolve().parent)!r} does not exist")
    read_kw = dict(
        context=opts["context"],
        weights=opts["weights"],
        selection=opts["selection"],
        drop_bad=opts["drop_bad"],
        step_size=opts["step_size"],
        progress=not opts["quiet"] and rank0,
    )
    if opts["stream"]:
        data = nio.RootSource(opts["data"], opts["features"], **read_kw)
    else:
        data = nio.read_features(opts["data"], opts["features"], **read_kw)
    n_files = len(data.sources)
    print(
        f"nfhep train: {data.n_entries} entries from {n_files} file(s)"
        + (f", {data.n_dropped} rows dropped (NaN/inf)" if data.n_dropped else "")
        + f"; features {', '.join(opts['features'])}"
        + (f"; context {', '.join(opts['context'])}" if opts["context"] else ""),
        file=out,
    )
    if distributed:
        how = "chunks k with k % N == rank" if opts["stream"] else "a contiguous block of rows each"
        print(f"nfhep train: data-parallel over {world.size} ranks (gloo), {how}", file=out)
    opts = dict(opts)
    explicit = set(opts.pop("_explicit", ()) or ())
    analysis = None
    if opts["auto_preprocess"]:
        analysis = choose_preprocessing(
            opts, _analysis_sample(data, bool(opts["stream"])), stream=bool(opts["stream"]), out=out
        )
    elif opts["explain_preprocessing"]:
        raise ValueError(
            "--explain-preprocessing needs the automatic preprocessing (drop --no-auto-preprocess)"
        )
    if opts["explain_preprocessing"]:
        return {"model": None, "history": None, "summary": None, "analysis": analysis}
    # data-parallel training trains one flow: no ensemble chosen for it
    keep = explicit | ({"ensemble"} if distributed else set())
    size_choice = choose_size_defaults(opts, data.n_entries, keep, out=out) if opts["size_defaults"] else []
    members = int(opts["ensemble"])
    if distributed and members > 1:
        raise ValueError(
            f"--ensemble {members} with data-parallel training is not supported: train with --ensemble 1, "
            "or the ensemble in one process"
        )
    fit_kw = fit_options(opts)
    if distributed:
        fit_kw["distributed"] = True
        if not rank0:
            fit_kw["progress"] = False
    trained, histories = [], []
    for k in range(members):
        seed_k = int(opts["seed"]) + k
        if members > 1:
            print(f"nfhep train: ensemble member {k + 1}/{members} (seed {seed_k})", file=out)
        torch.manual_seed(seed_k)
        model = Model.create(
            opts["flow"],
            list(opts["features"]),
            context_features=tuple(opts["context"] or ()),
            preprocess=analysis,
            **{**flow_options(opts), "seed": seed_k},
        )
        if opts["dtype"] == "float64":
            model = model.to(torch.float64)
        kw = {**fit_kw, "seed": seed_k}
        if k > 0:  # one preprocessing for the whole ensemble: member 0's, fitted on its training rows
            model.preprocessing = copy.deepcopy(trained[0].preprocessing)
            kw["fit_preprocessing"] = False
        if opts["stream"]:
            history = fit(model, data, **kw)
        elif distributed:
            from nfhep.distributed import shard_rows

            sl = shard_rows(len(data.x), world.rank, world.size)
            history = fit(
                model,
                data.x[sl],
                context=None if data.context is None else data.context[sl],
                weights=None if data.weights is None else data.weights[sl],
                **kw,
            )
        else:
            history = fit(model, data.x, context=data.context, weights=data.weights, **kw)
        trained.append(model)
        histories.append(history)
    if members > 1:
        from nfhep.flows import Ensemble

        model = Model(
            Ensemble([m.flow for m in trained]),
            trained[0].preprocessing,
            list(opts["features"]),
            tuple(opts["context"] or ()),
        ).eval()
        history = histories[0]
    hist = history.to_dict()
    summary = _history_summary(hist, history)
    if members > 1:  # the top-level figures are member 0's (as "history"); every member's under "members"
        summary = {**summary, "members": [_history_summary(h.to_dict(), h) for h in histories]}
    provenance = {
        "data": data.provenance(),
        "training": {k: opts[k] for k in sorted(opts) if k not in ("output", "quiet", "data")},
        "inputs": list(opts["data"]),
        "history": summary,
        "training_seconds": round(time.perf_counter() - t0, 3),
    }
    if analysis is not None:
        provenance["preprocessing"] = analysis.to_list()
    if size_choice:
        provenance["size_defaults"] = size_choice
    if distributed:
        provenance["distributed"] = {"world_size": world.size, "backend": "gloo"}
    if not rank0:
        return {"model": None, "history": None, "summary": summary, "model_obj": model}
    path = modelfile.save(model, output, provenance=provenance)
    hpath = history_path(path)
    record = {"history": hist, "summary": summary, "options": _jsonable_opts(opts)}
    if members > 1:  # "history" is member 0's (as before); every member's under "members"
        record["members"] = [h.to_dict() for h in histories]
    _write_json_atomic(hpath, record)
    if members > 1:
        per = summary["members"]
        done = (
            f"an ensemble of {members} flows: "
            + ", ".join(f"{p['epochs_run']} epochs ({p['stop_reason']})" for p in per)
            + "; best val loss "
            + ", ".join(f"{p['best_val_loss']:.4g}" if p["best_val_loss"] is not None else "-" for p in per)
            + " (each on its own validation rows)"
        )
    else:
        done = (
            f"{summary.get('epochs_run')} epochs ({summary.get('stop_reason')}), "
            f"best epoch {summary.get('best_epoch')}, val loss {summary.get('best_val_loss')}"
        )
    print(f"nfhep train: {done}; wrote {path} and {hpath}", file=out)
    return {"model": str(path), "history": str(hpath), "summary": summary, "model_obj": model}


def _history_summary(hist: Mapping[str, Any], history: Any) -> dict[str, Any]:
    loss = list(hist.get("loss", []) or [])
    val = list(hist.get("val_loss", []) or [])
    best_epoch = getattr(history, "best_epoch", hist.get("best_epoch"))
    finite_val = [v for v in val if v is not None and v == v]
    return {
        "epochs_run": len(loss),
        "best_epoch": best_epoch,
        "stop_reason": getattr(history, "stop_reason", hist.get("stop_reason")),
        "final_loss": loss[-1] if loss else None,
        "final_val_loss": val[-1] if val else None,
        "best_val_loss": min(finite_val) if finite_val else None,
        "final_lr": (hist.get("lr") or [None])[-1],
    }


def _jsonable_opts(opts: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(opts), default=str))


def _write_json_atomic(path: Path, obj: Any) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def run(args: argparse.Namespace) -> int:
    from nfhep import distributed as nd

    nproc = getattr(args, "nproc", None)
    if hasattr(args, "nproc"):
        delattr(args, "nproc")
    if nproc is not None and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1):
        raise ValueError(f"--nproc must be a positive integer, got {nproc!r}")
    world = nd.env_world()
    if world is not None and nproc is not None and nproc > 1:
        raise ValueError(
            f"--nproc {nproc} given inside a distributed launch (RANK/WORLD_SIZE set, e.g. by torchrun); "
            "use one or the other"
        )
    opts = resolve_options(args)
    if opts.get("explain_preprocessing"):
        train_from_options(opts)
        return 0
    if world is not None and world.size > 1:
        return _run_rank(opts)
    if nproc is None or nproc == 1:
        train_from_options(opts)
        return 0
    import tempfile

    output = Path(opts["output"])
    if not output.resolve().parent.is_dir():
        raise FileNotFoundError(f"output directory {str(output.resolve().parent)!r} does not exist")
    fd, cfg = tempfile.mkstemp(prefix=".nfhep-train-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_jsonable_opts(opts), fh)
        return nd.launch(nproc, [sys.executable, "-m", "nfhep.cli.train", cfg])
    finally:
        os.unlink(cfg)


def _run_rank(opts: Mapping[str, Any]) -> int:
    """One rank of a distributed job: join the process group, train, leave."""
    from nfhep import distributed as nd

    world = nd.init_from_env()
    ok = False
    try:
        train_from_options(opts, world=world)
        ok = True
    finally:
        nd.leave(ok=ok)
    return 0


def _worker_main(argv: Sequence[str]) -> int:
    """Entry of a rank started by ``nfhep train --nproc N``: ``python -m nfhep.cli.train OPTIONS.json``."""
    rank = os.environ.get("RANK", "?")
    try:
        with open(argv[0], encoding="utf-8") as fh:
            opts = json.load(fh)
        return _run_rank(opts)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as err:
        if os.environ.get("NFHEP_DEBUG"):
            raise
        print(f"nfhep train (rank {rank}): error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))

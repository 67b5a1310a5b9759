"""``nfhep sample``: draw events from a trained flow into a ROOT file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence

import numpy as np

COMMAND = "sample"
HELP = "draw events from a model file into a ROOT TTree (branches named after the features)"
DESCRIPTION = """\
Sample N events from a trained flow and write them as a TTree (one branch per feature, in data units,
float64 or float32 as the model; ZSTD level 1; written to a temporary file and renamed, so an interrupted
run leaves no output). OUT may name the tree: out.root:tree (default tree: "samples").

Conditional models need a context: either fixed values for all events (--context mass=125,energy=13)
or one context row per event read from ROOT branches (--context-from file.root:tree; N defaults to its
number of entries); the context branches are written to the output too.

Samples are never NaN/inf (such draws are redrawn) and stay inside the model's bounds and discrete values.
Events beyond the training range by more than --margin (a fraction of the range, default 0.1) are counted
and reported; --reject-outside redraws them instead (models trained by nfhep train know their range).

examples:
  nfhep sample model.safetensors -n 100000 -o gen.root
  nfhep sample model.safetensors -n 1e6 -o gen.root:events --seed 3 --log-prob
  nfhep sample cond.safetensors -n 50000 --context mass=125 -o gen125.root
"""

__all__ = ["parse_context_values", "sample_chunks"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.safetensors) written by nfhep train")
    p.add_argument(
        "-n",
        "--events",
        type=float,
        default=None,
        help="number of events (1e6 accepted); required unless --context-from is given",
    )
    p.add_argument(
        "-o", "--output", required=True, help="output ROOT file, optionally :tree (default tree 'samples')"
    )
    p.add_argument("--context", default=None, help="fixed context values NAME=VALUE,... (conditional models)")
    p.add_argument(
        "--context-from",
        default=None,
        help="ROOT file[:tree] with the context branches, one sampled event per entry",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--chunk-size", type=int, default=100_000, help="events generated and written per chunk")
    p.add_argument(
        "--log-prob", action="store_true", help="also write the model's log density as branch 'log_prob'"
    )
    p.add_argument(
        "--reject-outside",
        action="store_true",
        help="redraw events beyond the training range by more than --margin (default: count and report)",
    )
    p.add_argument(
        "--margin", type=float, default=0.1, help="the out-of-range margin, a fraction of the range [0.1]"
    )
    p.add_argument("--compression", default="zstd1", help="zstd1 (default), zlib1, lz4, lzma, none")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def parse_context_values(text: str, names: Sequence[str]) -> np.ndarray:
    """``"mass=125,energy=13"`` -> array in the model's context order; every context name required."""
    values: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--context: expected NAME=VALUE, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in names:
            raise ValueError(f"--context: {k!r} is not a context feature of the model ({', '.join(names)})")
        try:
            values[k] = float(v)
        except ValueError:
            raise ValueError(f"--context: value of {k!r} is not a number: {v!r}") from None
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"--context: missing value(s) for {', '.join(missing)}")
    return np.array([values[n] for n in names], dtype=np.float64)


def sample_chunks(
    model,
    n: int,
    *,
    context: np.ndarray | None,
    chunk_size: int,
    seed: int,
    log_prob: bool,
    progress: bool,
    reject_outside: bool = False,
    margin: float = 0.1,
    stats: dict | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield chunks ``{feature: values, context...: values, ["log_prob"]}`` of ``n`` sampled events.

    ``context`` is None, one row (C,) used for every event, or (n, C) rows. A ``torch.Generator`` seeded once
    with ``seed`` drives the draws, so the output depends on ``seed`` and ``chunk_size`` only. ``stats``
    (a dict) accumulates the models' ``last_sample_stats`` counts (redrawn, outside the training range).
    """
    import torch

    features = list(model.features)
    cnames = list(getattr(model, "context_features", ()) or ())
    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="sampling", unit="ev", leave=False, disable=None)
    try:
        with torch.no_grad():
            for start in range(0, n, chunk_size):
                m = min(chunk_size, n - start)
                ctx = rows = None
                if cnames:
                    rows = context if context.ndim == 2 else np.broadcast_to(context, (m, len(cnames)))
                    rows = rows[start : start + m] if context.ndim == 2 else rows
                    ctx = torch.as_tensor(np.ascontiguousarray(rows), dtype=dtype)
                kw = {"reject_outside": reject_outside, "margin": margin}
                if log_prob:
                    x, lp = model.sample_and_log_prob(m, context=ctx, generator=gen, **kw)
                else:
                    x, lp = model.sample(m, context=ctx, generator=gen, **kw), None
                if stats is not None:
                    for k, v in getattr(model, "last_sample_stats", {}).items():
                        stats[k] = stats.get(k, 0) + int(v)
                x = x.detach().cpu().numpy()
                if x.shape != (m, len(features)):
                    raise RuntimeError(
                        f"model.sample returned shape {x.shape}, expected {(m, len(features))}"
                    )
                chunk = {name: x[:, j] for j, name in enumerate(features)}
                if rows is not None:  # the context as given (float64), not as cast for the model
                    chunk.update(
                        {name: np.array(rows[:, j], dtype=np.float64) for j, name in enumerate(cnames)}
                    )
                if lp is not None:
                    chunk["log_prob"] = lp.detach().cpu().numpy().reshape(m)
                if not all(np.isfinite(v).all() for v in chunk.values()):
                    raise ValueError("the model produced NaN/inf samples; refusing to write them")
                if bar is not None:
                    bar.update(m)
                yield chunk
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    from nfhep import io as nio
    from nfhep import modelfile

    path, tree = nio.split_output_spec(args.output, "samples")
    model = modelfile.load(args.model)
    features = list(model.features)
    cnames = list(getattr(model, "context_features", ()) or ())
    if args.log_prob and "log_prob" in features + cnames:
        raise ValueError("--log-prob: the model already has a feature named 'log_prob'")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be positive, got {args.chunk_size}")
    n = None
    if args.events is not None:
        if args.events != int(args.events) or args.events < 1:
            raise ValueError(f"-n/--events must be a positive integer, got {args.events}")
        n = int(args.events)
    context = None
    if cnames:
        if (args.context is None) == (args.context_from is None):
            raise ValueError(
                f"the model is conditional on {', '.join(cnames)}: give exactly one of --context "
                "NAME=VALUE,... or --context-from FILE[:tree]"
            )
        if args.context is not None:
            context = parse_context_values(args.context, cnames)
        else:
            s = nio.read_features(args.context_from, cnames, hash_files=False)
            context = s.x
            if n is None:
                n = len(context)
            elif n != len(context):
                raise ValueError(f"-n {n} differs from the {len(context)} entries of --context-from")
    elif args.context is not None or args.context_from is not None:
        raise ValueError("the model has no context features; drop --context/--context-from")
    if n is None:
        raise ValueError("-n/--events is required")
    margin = float(getattr(args, "margin", 0.1))
    reject = bool(getattr(args, "reject_outside", False))
    if not margin >= 0:
        raise ValueError(f"--margin must be >= 0, got {margin}")
    stats: dict = {}
    written = nio.write_root(
        path,
        tree,
        sample_chunks(
            model,
            n,
            context=context,
            chunk_size=args.chunk_size,
            seed=args.seed,
            log_prob=args.log_prob,
            progress=not args.quiet,
            reject_outside=reject,
            margin=margin,
            stats=stats,
        ),
        compression=args.compression,
    )
    print(
        f"nfhep sample: wrote {written} events to {path}:{tree} (branches: {', '.join(features)})", file=out
    )
    known = getattr(model.preprocessing, "data_range", None) is not None
    if known:
        how = (
            f"{stats.get('redrawn_outside', 0)} redrawn (--reject-outside)"
            if reject
            else "kept (--reject-outside redraws them)"
        )
        print(
            f"nfhep sample: {stats.get('outside_range', 0)} of {written} first draws beyond the training "
            f"range by more than {margin:g} of its width: {how}",
            file=out,
        )
    if stats.get("redrawn_non_finite"):
        print(f"nfhep sample: {stats['redrawn_non_finite']} non-finite draws redrawn", file=out)
    return 0

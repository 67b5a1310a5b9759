"""``nfhep eval``: evaluate model files on ROOT ntuples, one friend file per input (C++ engine)."""

from __future__ import annotations

import argparse
import sys

COMMAND = "eval"
HELP = "evaluate model files on ROOT ntuples: log p and in-support as a friend tree per input file"
DESCRIPTION = """\
Evaluate one or several model files on every entry of ROOT ntuples with the C++ engine and write, per
input file, a ROOT file with a tree of the same entries in the same order (a friend tree):
  <prefix>logp, <prefix>in_support              one model (default prefix nf_)
  <prefix><name>_logp, <prefix><name>_in_support  several models (--model A --model B; name: --name
                                                 or the file stem, e.g. sig-v2.safetensors -> sig_v2)
  <prefix>llr                                   with --llr: logp of the first model minus the second
  <prefix>logp_std (<prefix><name>_logp_std)     an ensemble (nfhep train --ensemble): the standard
                                                 deviation of its members' log p, an uncertainty
The tree is <tree>_nf (--out-tree); the models' provenance (file name, sha256, checksum, features,
nfhep version) is stored as the TObjString "nfhep_provenance" (JSON). --full-copy writes the input's
branches plus the new ones instead. Inputs: file.root, file.root:tree, or glob patterns.

The branches named like the model's features and context features are read (one number per entry).
NaN/inf values are an error naming file, tree, branch and count; with --allow-bad those entries get
logp = NaN and in_support = false, and the count is reported.

Outputs: -o DIR (one <input stem>_nf.root per input), -o FILE.root (one input), default next to the
inputs. Each output appears complete or not at all (written to an anonymous file linked into place at
the end: a killed run leaves no file behind); an existing output is refused without --overwrite.

Executors: processes (default; --workers N local processes, one task per input file, the model loaded
once per worker) or dask (--scheduler tcp://host:8786, dask.distributed; files must be on a shared file
system). Results are identical whatever the executor, workers or threads.

examples:
  nfhep eval model.safetensors data.root:events -o data_nf.root
  nfhep eval model.safetensors 'ntuples/*.root:events' -o friends/ --workers 2
  nfhep eval --model sig.safetensors --model bkg.safetensors --llr data/*.root -o friends/
  nfhep eval model.safetensors big/*.root -o out/ --executor dask --scheduler tcp://10.0.0.1:8786
then in ROOT:  events->AddFriend("events_nf", "data_nf.root"); events->Draw("nf_logp");
"""

__all__: list[str] = []


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="the model file then the input files (file.root[:tree], globs); with --model only inputs",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="FILE",
        help="a model file (repeat for several models: one logp branch each)",
    )
    p.add_argument(
        "--name",
        action="append",
        default=None,
        help="name of each model in branch names (repeat, in --model order) [file stems]",
    )
    p.add_argument("--tree", default=None, help="input tree when an input does not name one [the only TTree]")
    p.add_argument("-o", "--output", default=None, help="output directory or FILE.root [next to the inputs]")
    p.add_argument("--out-tree", default=None, help="output tree name [<tree>_nf; <tree> with --full-copy]")
    p.add_argument("--prefix", default="nf_", help="prefix of the new branches [nf_]")
    p.add_argument("--llr", action="store_true", help="also write <prefix>llr = logp(first) - logp(second)")
    p.add_argument("--full-copy", action="store_true", help="write the input's branches plus the new ones")
    p.add_argument(
        "--step-size", type=int, default=100_000, help="entries read and evaluated per chunk [100000]"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--allow-bad",
        action="store_true",
        help="entries with NaN/inf inputs get logp = NaN, in_support = false (counted) instead of an error",
    )
    p.add_argument("--compression", default="zstd1", help="zstd1 (default), zlib1, lz4, lzma, none")
    p.add_argument(
        "--executor", choices=("processes", "dask"), default="processes", help="where tasks run [processes]"
    )
    p.add_argument("--workers", type=int, default=None, help="local processes [min(#inputs, #CPUs)]")
    p.add_argument(
        "--threads", type=int, default=None, help="nfhep threads per task [#CPUs/workers; dask: 1]"
    )
    p.add_argument("--scheduler", default=None, help="dask scheduler address (tcp://host:8786)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-file lines")


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    from nfhep.evaluate import evaluate

    if args.model:
        models, inputs = list(args.model), list(args.paths)
    else:
        if len(args.paths) < 2:
            raise ValueError("give a model file and at least one input (or --model FILE and inputs)")
        models, inputs = [args.paths[0]], list(args.paths[1:])
    if args.executor == "dask" and not args.scheduler:
        raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    if args.scheduler and args.executor != "dask":
        raise ValueError("--scheduler is for --executor dask")
    results = evaluate(
        models,
        inputs,
        tree=args.tree,
        output=args.output,
        out_tree=args.out_tree,
        prefix=args.prefix,
        names=args.name,
        llr=args.llr,
        full_copy=args.full_copy,
        step_size=args.step_size,
        overwrite=args.overwrite,
        allow_bad=args.allow_bad,
        compression=args.compression,
        executor=args.executor,
        workers=args.workers,
        threads=args.threads,
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    n = sum(r.n_entries for r in results)
    bad = sum(r.n_bad for r in results)
    if not args.quiet:
        for r in results:
            extra = f", {r.n_bad} bad entries flagged" if r.n_bad else ""
            print(f"  {r.input}:{r.tree} -> {r.output}:{r.out_tree} ({r.n_entries} entries{extra})", file=out)
    print(
        f"nfhep eval: {n} entries of {len(results)} file(s) evaluated with {len(models)} model(s)"
        + (f"; {bad} entries with NaN/inf inputs flagged (logp = NaN, in_support = false)" if bad else ""),
        file=out,
    )
    return 0

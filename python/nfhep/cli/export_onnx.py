"""``nfhep export-onnx``: write a model's log_prob as an ONNX graph of standard operators."""

from __future__ import annotations

import argparse
import sys

COMMAND = "export-onnx"
HELP = "export a model's log_prob as an ONNX graph (standard operators: onnxruntime, SOFIE-style tools)"
DESCRIPTION = """\
Write the density log p(x | context) of a model file as an ONNX model built from standard ai.onnx
operators only (the list is in docs/onnx.md), so ONNX-based inference tools -- onnxruntime, code
generators in the style of TMVA SOFIE -- can evaluate it without nfhep.

The graph has the input  x        (N, D)  raw feature values, in the model's feature order
              (and)      context  (N, C)  raw context values, for a conditional model
and the output           log_prob (N,)    the density in data units, as Model.log_prob:
the model's preprocessing (bounds, log, periodic, discrete, spike, quantile maps,
standardisation), every flow layer and the normal base.
N is dynamic. Events outside the support give -inf; a NaN feature or a NaN/inf context gives NaN
(as nfhep.Engine and nfhep eval). The model's features, context, flow configuration, checksum and the
file's SHA-256 are stored in the ONNX metadata (metadata_props).

The output is written to a temporary file and renamed (complete or absent); an existing output is
refused without --overwrite.

--check evaluates the graph with onnxruntime on events sampled from the model (context values drawn
from the training context's mean and standard deviation) and prints the largest relative difference
|onnx - torch| / max(1, |torch|) to the torch model; it fails (exit code 1) above --check-tol.
float32 differences are rounding (typically 1e-7 to 1e-6), amplified where a spline bin is steep.

examples:
  nfhep export-onnx model.safetensors -o model.onnx
  nfhep export-onnx model.safetensors -o model.onnx --check --overwrite
  nfhep export-onnx model.safetensors -o model64.onnx --dtype float64 --opset 20
then in Python:
  import onnxruntime as ort
  sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
  logp = sess.run(["log_prob"], {"x": x.astype("float32")})[0]
"""

__all__: list[str] = []


def add_arguments(p: argparse.ArgumentParser) -> None:
    from nfhep.onnx_export import DEFAULT_OPSET, MIN_OPSET

    p.add_argument("model", metavar="MODEL", help="the nfhep model file (.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the ONNX file to write (.onnx)")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} or newer [{DEFAULT_OPSET}]",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of inputs, weights and output [float32]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--check", action="store_true", help="compare onnxruntime with the torch model on sampled events"
    )
    p.add_argument("--check-events", type=int, default=2000, help="events sampled by --check [2000]")
    p.add_argument(
        "--check-tol",
        type=float,
        default=None,
        help="largest relative difference --check accepts [1e-4 for float32, 1e-9 for float64]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --check events [0]")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the --check result")


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    from nfhep.onnx_export import compare_onnxruntime, export_onnx, operators_of

    if args.check and args.check_events < 1:
        raise ValueError(f"--check-events must be >= 1, got {args.check_events}")
    path = export_onnx(args.model, args.output, opset=args.opset, dtype=args.dtype, overwrite=args.overwrite)
    if not args.quiet:
        ops = operators_of(path)
        print(
            f"nfhep export-onnx: wrote {path} (opset {args.opset}, {args.dtype}; {len(ops)} operator types: "
            f"{', '.join(ops)})",
            file=out,
        )
    if not args.check:
        return 0
    tol = args.check_tol if args.check_tol is not None else (1e-4 if args.dtype == "float32" else 1e-9)
    result = compare_onnxruntime(args.model, path, events=args.check_events, seed=args.seed)
    verdict = "ok" if result["max_rel_diff"] <= tol else f"FAILED (tolerance {tol:g})"
    print(
        f"nfhep export-onnx --check: {result['events']} sampled events, max |onnx - torch| / max(1, |torch|)"
        f" = {result['max_rel_diff']:.3g} (median {result['median_rel_diff']:.3g}): {verdict}",
        file=out,
    )
    return 0 if result["max_rel_diff"] <= tol else 1

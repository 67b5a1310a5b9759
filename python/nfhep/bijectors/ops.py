r"""``torch.autograd.Function``\ s over nfhep's C++ bijector kernels: the one place torch meets ``_core``.

The forward of each Function calls the C++ kernel on the tensors' memory (zero-copy through
``Tensor.numpy()`` on contiguous, detached CPU tensors; the GIL is released while the kernel runs) and its
backward calls the analytic vector-Jacobian-product kernel (``rqs_backward`` / ``affine_backward``).

The backward is **first-order only** (``once_differentiable``): differentiating the gradient again (e.g.
a Hessian-vector product or a gradient penalty) raises an error; use the pure-torch path
(``backend="torch"``) when higher derivatives are needed.

On CUDA tensors, in a build with CUDA (``nfhep.build_info()["cuda"]``), the Functions call the CUDA
launchers (``_core.bijectors.cuda_*``) with the tensors' device pointers on torch's current stream; the
outputs and gradients are allocated by torch on the same device. **Status: compiled, never run** — the
machines nfhep is developed and tested on have no GPU (the parity test
``tests/test_bijectors_torch.py::test_cuda_matches_cpu`` runs where a device exists). In a CPU-only build,
CUDA tensors take the pure-torch path with ``backend="auto"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .. import _core

__all__ = [
    "AffineFunction",
    "RQSFunction",
    "cpp_support",
]

_CPP_DTYPES = (torch.float32, torch.float64)


def _kernels() -> Any:
    return getattr(_core, "bijectors", None)


def cpp_support(x: torch.Tensor, kind: str = "rqs") -> str | None:
    """Why the compiled kernels cannot evaluate ``x`` (a sentence), or ``None`` if they can.

    Parameters
    ----------
    x : torch.Tensor
        The input tensor (its device and dtype decide).
    kind : {"rqs", "affine"}
        The bijector.
    """
    if x.dtype not in _CPP_DTYPES:
        return f"the C++ kernels support float32 and float64 only, got {x.dtype}"
    if x.device.type not in ("cpu", "cuda"):
        return f"nfhep has no kernels for device type {x.device.type!r} (CPU and CUDA only)"
    mod = _kernels()
    if mod is None or not hasattr(mod, f"{kind}_forward"):
        return (
            f"this build of nfhep._core has no {kind} kernels (rebuild nfhep from a source tree that "
            "contains them)"
        )
    if x.device.type == "cuda":
        if not bool(_core.build_info()["cuda"]):
            return (
                "this nfhep was built without CUDA; rebuild with "
                "`pip install . -Ccmake.define.NFHEP_CUDA=ON` to run the kernels on CUDA tensors"
            )
        if not hasattr(mod, f"cuda_{kind}_forward") or not bool(mod.cuda_available()):
            return "this build of nfhep._core reports CUDA but has no CUDA bijector launchers"
    return None


def _flat(x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached, contiguous, flattened views (copies only if needed): (n,) and (n, P) for the kernels."""
    return x.detach().reshape(-1).contiguous(), params.detach().reshape(-1, params.shape[-1]).contiguous()


def _grad_or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The incoming gradient as a flat contiguous tensor shaped like ``like`` (zeros if None)."""
    if g is None:
        return torch.zeros_like(like, memory_format=torch.contiguous_format)
    return g.reshape(like.shape).contiguous()


def _cpu_grad(g: torch.Tensor | None, shape: torch.Size) -> Any:
    """The incoming gradient for the CPU kernels: None (zeros), or a numpy view of ``g`` read in place.

    The kernels read a gradient that is C-contiguous, or broadcast (stride 0) along trailing axes over a
    C-contiguous leading part -- what ``sum()``/``mean()`` (over everything or over the last axes) hand to
    backward. Only other layouts are copied.
    """
    if g is None:
        return None
    if g.shape != shape:
        g = g.reshape(shape)
    k = g.dim()
    while k > 0 and (g.shape[k - 1] == 1 or g.stride(k - 1) == 0):
        k -= 1
    expected = 1
    for j in range(k - 1, -1, -1):
        if g.shape[j] != 1 and g.stride(j) != expected:
            g = g.contiguous()
            break
        expected *= g.shape[j]
    return g.numpy()


def _kernel_shapes(shapes: tuple[torch.Size, torch.Size]) -> tuple[torch.Size, torch.Size]:
    """The (x, params) shapes the CPU backward kernels see: the caller's, with a 0-d x as shape (1,)."""
    xs, ps = shapes
    if len(xs) == 0:
        return torch.Size([1]), torch.Size([1, ps[-1]])
    return xs, ps


def _rqs_options(bound: float, mw: float, mh: float, md: float) -> dict[str, float]:
    return {"bound": bound, "min_bin_width": mw, "min_bin_height": mh, "min_derivative": md}


def _cuda_launch(name: str, device: torch.device, dtype: torch.dtype, *args: Any, **kwargs: Any) -> None:
    """Call ``_core.bijectors.<name>`` on ``device`` with torch's current stream (never run here: no GPU)."""
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        getattr(_kernels(), name)(
            *args, dtype="float32" if dtype == torch.float32 else "float64", stream=stream, **kwargs
        )


def _ptr(t: torch.Tensor) -> int:
    return int(t.data_ptr())


class RQSFunction(torch.autograd.Function):
    r"""Rational-quadratic spline through nfhep's C++ kernels (forward or inverse), with analytic backward.

    ``RQSFunction.apply(x, params, inverse, bound, min_bin_width, min_bin_height, min_derivative)``
    returns ``(output, logabsdet)``; ``params`` must already have the full shape ``x.shape + (3K-1,)``
    (arguments are validated by :func:`nfhep.bijectors.rqs`, which is the function to call).
    First-order differentiable only.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        params: torch.Tensor,
        inverse: bool,
        bound: float,
        min_bin_width: float,
        min_bin_height: float,
        min_derivative: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        opts = _rqs_options(bound, min_bin_width, min_bin_height, min_derivative)
        xc, pc = _flat(x, params)
        if xc.device.type == "cuda":
            y, ld = torch.empty_like(xc), torch.empty_like(xc)
            if xc.numel() > 0:
                name = "cuda_rqs_inverse" if inverse else "cuda_rqs_forward"
                k = (int(pc.shape[-1]) + 1) // 3
                _cuda_launch(
                    name, xc.device, xc.dtype, _ptr(xc), _ptr(pc), xc.numel(), k, _ptr(y), _ptr(ld), **opts
                )
            out, lad = y.view(x.shape), ld.view(x.shape)
        else:
            mod = _kernels()
            fn = mod.rqs_inverse if inverse else mod.rqs_forward
            yn, ldn = fn(xc.numpy(), pc.numpy(), **opts)
            out, lad = torch.from_numpy(yn).view(x.shape), torch.from_numpy(ldn).view(x.shape)
        ctx.save_for_backward(xc, pc)
        ctx.shapes = (x.shape, params.shape)
        ctx.inverse = bool(inverse)
        ctx.opts = opts
        return out, lad

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor | None, grad_lad: torch.Tensor | None) -> tuple[Any, ...]:
        xc, pc = ctx.saved_tensors
        if xc.device.type == "cuda":
            go, gl = _grad_or_zeros(grad_out, xc), _grad_or_zeros(grad_lad, xc)
            gxf, gpf = torch.empty_like(xc), torch.empty_like(pc)
            if xc.numel() > 0:
                k = (int(pc.shape[-1]) + 1) // 3
                args = (_ptr(xc), _ptr(pc), _ptr(go), _ptr(gl), xc.numel(), k, _ptr(gxf), _ptr(gpf))
                _cuda_launch("cuda_rqs_backward", xc.device, xc.dtype, *args, inverse=ctx.inverse, **ctx.opts)
        else:
            xs, ps = _kernel_shapes(ctx.shapes)
            gxn, gpn = _kernels().rqs_backward(
                xc.view(xs).numpy(),
                pc.view(ps).numpy(),
                _cpu_grad(grad_out, xs),
                _cpu_grad(grad_lad, xs),
                inverse=ctx.inverse,
                **ctx.opts,
            )
            gxf, gpf = torch.from_numpy(gxn), torch.from_numpy(gpn)
        gx, gp = gxf.view(ctx.shapes[0]), gpf.view(ctx.shapes[1])
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return (gx if need_x else None, gp if need_p else None, None, None, None, None, None)


class AffineFunction(torch.autograd.Function):
    r"""Affine bijector :math:`y = x e^s + t` through nfhep's C++ kernels, with analytic backward.

    ``AffineFunction.apply(x, params, inverse)`` returns ``(output, logabsdet)``; ``params`` must already
    have the full shape ``x.shape + (2,)``. First-order differentiable only.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xc, pc = _flat(x, params)
        if xc.device.type == "cuda":
            y, ld = torch.empty_like(xc), torch.empty_like(xc)
            if xc.numel() > 0:
                name = "cuda_affine_inverse" if inverse else "cuda_affine_forward"
                _cuda_launch(name, xc.device, xc.dtype, _ptr(xc), _ptr(pc), xc.numel(), _ptr(y), _ptr(ld))
            out, lad = y.view(x.shape), ld.view(x.shape)
        else:
            mod = _kernels()
            fn = mod.affine_inverse if inverse else mod.affine_forward
            yn, ldn = fn(xc.numpy(), pc.numpy())
            out, lad = torch.from_numpy(yn).view(x.shape), torch.from_numpy(ldn).view(x.shape)
        ctx.save_for_backward(xc, pc)
        ctx.shapes = (x.shape, params.shape)
        ctx.inverse = bool(inverse)
        return out, lad

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor | None, grad_lad: torch.Tensor | None) -> tuple[Any, ...]:
        xc, pc = ctx.saved_tensors
        if xc.device.type == "cuda":
            go, gl = _grad_or_zeros(grad_out, xc), _grad_or_zeros(grad_lad, xc)
            gxf, gpf = torch.empty_like(xc), torch.empty_like(pc)
            if xc.numel() > 0:
                args = (_ptr(xc), _ptr(pc), _ptr(go), _ptr(gl), xc.numel(), _ptr(gxf), _ptr(gpf))
                _cuda_launch("cuda_affine_backward", xc.device, xc.dtype, *args, inverse=ctx.inverse)
        else:
            xs, ps = _kernel_shapes(ctx.shapes)
            gxn, gpn = _kernels().affine_backward(
                xc.view(xs).numpy(),
                pc.view(ps).numpy(),
                _cpu_grad(grad_out, xs),
                _cpu_grad(grad_lad, xs),
                inverse=ctx.inverse,
            )
            gxf, gpf = torch.from_numpy(gxn), torch.from_numpy(gpn)
        gx, gp = gxf.view(ctx.shapes[0]), gpf.view(ctx.shapes[1])
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return (gx if need_x else None, gp if need_p else None, None)

r"""Training by (weighted) maximum likelihood: Adam, LR reduction on plateau, early stopping.

The loss of a batch is the weighted mean negative log-likelihood plus the optional penalties on the
conditioner weight matrices :math:`W`:

.. math::

    L = -\frac{\sum_i w_i \log p(x_i \mid c_i)}{\sum_i w_i} + \lambda_1 \sum |W| + \lambda_2 \sum W^2.

The per-epoch ``loss`` and ``val_loss`` recorded in :class:`History` are the weighted mean NLL alone
(without penalties), so they are comparable with each other and with a true NLL.

Recipe of the NFlikelihood papers (arXiv:2309.09743): Adam (arXiv:1412.6980) with lr 1e-3, batch 512,
LR × 0.2 on a plateau of the validation loss, early stopping with restore-best-weights, a random 20%
validation split.

Non-finite losses: a batch whose loss or gradient norm is NaN/inf ends that epoch without an update;
the best weights so far are restored, the optimizer is restarted with the learning rate multiplied by
``lr_factor`` and training continues. After ``max_failures`` consecutive failed epochs training stops with
``History.stop_reason`` saying so; the model always holds the best finite weights seen.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["History", "fit"]


@dataclass
class History:
    """What happened during :func:`fit`, one entry per epoch.

    Attributes
    ----------
    loss, val_loss : list of float
        Weighted mean NLL on the training rows (averaged over the epoch's batches) and on the validation
        rows (after the epoch); NaN for a failed epoch. Without a validation split ``val_loss`` repeats
        ``loss`` (the monitored quantity).
    lr : list of float
        Learning rate used in the epoch.
    seconds : list of float
        Wall time of the epoch.
    best_epoch : int or None
        0-based epoch whose weights the model holds at the end (None: no epoch improved; the initial
        weights were kept).
    best_val_loss : float
        Its monitored loss.
    stop_reason : str
        ``"max_epochs"``, ``"early_stopping"``, ``"min_lr"`` is never used (the LR floors at ``min_lr``),
        or ``"non_finite: ..."`` with a message.
    failures : list of dict
        Each failed epoch: ``{"epoch", "batch", "lr"}``.
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    stop_reason: str = ""
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (non-finite numbers become ``None``)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            return v

        return clean(
            {
                "loss": list(self.loss),
                "val_loss": list(self.val_loss),
                "lr": list(self.lr),
                "seconds": list(self.seconds),
                "best_epoch": self.best_epoch,
                "best_val_loss": float(self.best_val_loss),
                "stop_reason": self.stop_reason,
                "failures": list(self.failures),
            }
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON (to a temporary name, then renamed)."""
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".history-", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


# -- input handling -----------------------------------------------------------------------------------
def _as_array(name: str, a: Any, ndim: int) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"nfhep.train.fit: argument {name!r} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim != ndim:
        raise ValueError(f"nfhep.train.fit: argument {name!r} must be {ndim}-D, got shape {a.shape}")
    bad = int((~np.isfinite(a)).reshape(a.shape[0], -1).any(axis=1).sum()) if a.size else 0
    if bad:
        raise ValueError(f"nfhep.train.fit: argument {name!r} has {bad} row(s) with NaN/inf")
    return a


def _check_chunk(chunk: dict, d: int, c: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    x = _as_array("x (chunk)", chunk["x"], 2)
    if x.shape[1] != d:
        raise ValueError(f"nfhep.train.fit: streamed chunk has {x.shape[1]} features, the model {d}")
    ctx = chunk.get("context")
    if c:
        if ctx is None:
            raise ValueError("nfhep.train.fit: streamed chunk has no context but the model needs it")
        ctx = _as_array("context (chunk)", ctx, 2)
    elif ctx is not None:
        raise ValueError("nfhep.train.fit: streamed chunk has context but the model has none")
    w = chunk.get("weights")
    if w is not None:
        w = _as_array("weights (chunk)", w, 1)
        if (w < 0).any():
            raise ValueError("nfhep.train.fit: negative weights in a streamed chunk")
    return x, ctx, w


def _split_mask(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean validation mask with round(fraction*n) True entries (at least 1 each side if n >= 2)."""
    n_val = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:n_val]] = True
    return mask


def _nll_sum(model, xb, cb, wb) -> tuple[torch.Tensor, torch.Tensor]:
    lp = model.log_prob(xb, cb)
    if wb is None:
        return -lp.sum(), torch.tensor(float(xb.shape[0]), dtype=lp.dtype)
    return -(wb * lp).sum(), wb.sum()


def fit(
    model: nn.Module,
    x: Any,
    *,
    context: Any = None,
    weights: Any = None,
    epochs: int = 200,
    batch_size: int = 512,
    lr: float = 1e-3,
    patience: int = 20,
    lr_factor: float = 0.2,
    lr_patience: int = 10,
    min_lr: float = 1e-6,
    validation_split: float = 0.2,
    l1: float = 0.0,
    l2: float = 0.0,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    progress: bool | str = "auto",
    device: str | torch.device = "cpu",
    fit_preprocessing: bool = True,
    max_failures: int = 3,
    distributed: bool = False,
) -> History:
    """Train ``model`` by weighted maximum likelihood (see the module documentation).

    Parameters
    ----------
    model : nfhep.model.Model or nfhep.flows.Flow
        Trained in place (its dtype, float32 or float64, is the training dtype).
    x : array (N, D) or a streamed source
        Training data, or an object with ``n_entries`` and ``iter_chunks(shuffle_seed)`` yielding dicts
        ``{"x": (m, D), "context": (m, C) or None, "weights": (m,) or None}``. Streamed: chunks are read in
        their stored order (``shuffle_seed=None``), so a fixed seeded ``validation_split`` of the rows of
        each chunk is the validation set in every epoch; training rows are shuffled within each chunk.
    context : array (N, C), optional
        Context features (conditional flows).
    weights : array (N,), optional
        Non-negative per-event weights (weighted maximum likelihood).
    epochs, batch_size, lr : int, int, float
        Maximum number of epochs, batch size, initial Adam learning rate.
    patience : int
        Stop after this many epochs without improvement of the validation loss.
    lr_factor, lr_patience, min_lr : float, int, float
        ``ReduceLROnPlateau``: multiply the LR by ``lr_factor`` after ``lr_patience`` epochs without
        improvement, never below ``min_lr``.
    validation_split : float
        Fraction of rows held out (random, seeded); 0 monitors the training loss.
    l1, l2 : float
        Penalties on the conditioner weight matrices (not biases).
    clip_grad_norm : float, optional
        Clip the global gradient norm.
    seed : int
        Seeds the split, the batch order and dropout (torch's global RNG is restored afterwards).
    progress : bool or "auto"
        tqdm bar with loss / val_loss / lr; "auto" shows it only when stderr is a terminal.
    device : str or torch.device
        Where to train (the model is moved there).
    fit_preprocessing : bool
        Fit the model's preprocessing on the training rows first (a :class:`~nfhep.model.Model` only).
    max_failures : int
        Consecutive failed (non-finite) epochs before giving up.
    distributed : bool
        Data-parallel training over the initialised ``torch.distributed`` process group (see
        :mod:`nfhep.distributed`). Array ``x`` (and ``context``, ``weights``) is then *this rank's share*
        of the rows (e.g. the rows :func:`nfhep.distributed.shard_rows` gives it); a streamed ``x`` is
        read only for the chunks ``k % world_size == rank``. Each rank holds out its own seeded
        ``validation_split`` of its rows; the preprocessing is fitted on the merged moments of all
        ranks' training rows; rank 0's initial weights are broadcast; ``batch_size`` is the *global*
        batch (``ceil(batch_size / world_size)`` rows per rank per step); gradients are summed over the
        ranks with the loss normalised by the global weight sum of the step, so a step equals the
        single-process step on the concatenated batch; losses (training and validation) are global
        weighted means, so every rank takes the same LR, early-stopping and failure decisions. ActNorm's
        data-dependent initialisation uses the first batches of all ranks concatenated; batch-norm
        running statistics are averaged over the ranks after every step. The progress bar is shown on
        rank 0 only. Every rank returns the same History and holds the same weights.

    Returns
    -------
    History

    Raises
    ------
    ValueError, TypeError
        Bad arguments (named), NaN/inf in the inputs, negative weights.
    """
    from .model import Model

    func = "nfhep.train.fit"
    for name, v, lo in (
        ("epochs", epochs, 0),
        ("batch_size", batch_size, 1),
        ("patience", patience, 0),
        ("lr_patience", lr_patience, 0),
        ("seed", seed, 0),
        ("max_failures", max_failures, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{func}: argument {name!r} must be an int >= {lo}, got {v!r}")
    if not lr > 0:
        raise ValueError(f"{func}: argument 'lr' must be > 0, got {lr}")
    if not 0 < lr_factor < 1:
        raise ValueError(f"{func}: argument 'lr_factor' must be in (0, 1), got {lr_factor}")
    if not 0 <= validation_split < 1:
        raise ValueError(f"{func}: argument 'validation_split' must be in [0, 1), got {validation_split}")
    if l1 < 0 or l2 < 0:
        raise ValueError(f"{func}: arguments 'l1' and 'l2' must be >= 0, got {l1}, {l2}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"{func}: argument 'clip_grad_norm' must be > 0 or None, got {clip_grad_norm}")
    if progress not in (True, False, "auto"):
        raise ValueError(f"{func}: argument 'progress' must be True, False or 'auto', got {progress!r}")

    comm = None
    if distributed:
        from .distributed import Comm

        comm = Comm()
    flow = model.flow if isinstance(model, Model) else model
    if not hasattr(flow, "conditioner_weights"):
        raise TypeError(
            f"{func}: argument 'model' must be an nfhep Model or Flow, got {type(model).__name__}"
        )
    device = torch.device(device)
    model.to(device)
    dtype = next(model.parameters()).dtype
    d, c = flow.features, flow.context
    streamed = hasattr(x, "iter_chunks") and hasattr(x, "n_entries")

    def tens(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=dtype, device=device)

    if streamed:
        if context is not None or weights is not None:
            raise ValueError(f"{func}: with a streamed 'x', context and weights come from its chunks")

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]]:
            if comm is not None:
                from .distributed import iter_chunk_shard

                numbered = iter_chunk_shard(x, comm.rank, comm.size)
            else:
                numbered = enumerate(x.iter_chunks(None))
            for k, ch in numbered:
                xa, ca, wa = _check_chunk(ch, d, c)
                mask = _split_mask(len(xa), validation_split, np.random.default_rng([seed, k]))
                yield xa, ca, wa, mask

        if fit_preprocessing and isinstance(model, Model):
            pre = model.preprocessing
            pre.fit_begin(d)
            n_seen = 0
            for xa, ca, wa, mask in chunks():
                tr = ~mask
                pre.fit_update(xa[tr], None if wa is None else wa[tr], context=None if ca is None else ca[tr])
                n_seen += int(tr.sum())
            if comm is not None:
                _merge_preprocessing(comm, pre)
                n_seen = int(comm.sum([n_seen])[0])
            if n_seen == 0:
                raise ValueError(f"{func}: the streamed source yielded no training rows")
            pre.fit_end()
    else:
        xa = _as_array("x", x, 2)
        if xa.shape[1] != d:
            raise ValueError(f"{func}: argument 'x' has {xa.shape[1]} features, the model has {d}")
        n = xa.shape[0]
        if n < 1:
            where = f" on rank {comm.rank}" if comm is not None else ""
            raise ValueError(f"{func}: argument 'x' has no rows{where}")
        ca = None
        if c:
            if context is None:
                raise ValueError(
                    f"{func}: argument 'context' is required (the model has {c} context features)"
                )
            ca = _as_array("context", context, 2)
            if ca.shape != (n, c):
                raise ValueError(f"{func}: argument 'context' must have shape ({n}, {c}), got {ca.shape}")
        elif context is not None:
            raise ValueError(f"{func}: argument 'context' given but the model has no context features")
        wa = None
        if weights is not None:
            wa = _as_array("weights", weights, 1)
            if wa.shape != (n,):
                raise ValueError(f"{func}: argument 'weights' must have shape ({n},), got {wa.shape}")
            if (wa < 0).any():
                raise ValueError(f"{func}: argument 'weights' has {int((wa < 0).sum())} negative value(s)")
            total = float(wa.sum()) if comm is None else comm.sum([float(wa.sum())])[0]
            if not total > 0:
                raise ValueError(f"{func}: argument 'weights' sums to zero")
        split_rng = np.random.default_rng(seed if comm is None else [seed, comm.rank])
        val_mask = _split_mask(n, validation_split, split_rng)
        tr = ~val_mask
        if fit_preprocessing and isinstance(model, Model):
            if comm is None:
                model.preprocessing.fit(
                    xa[tr], None if wa is None else wa[tr], context=None if ca is None else ca[tr]
                )
            else:
                pre = model.preprocessing
                pre.fit_begin(d)
                pre.fit_update(xa[tr], None if wa is None else wa[tr], context=None if ca is None else ca[tr])
                _merge_preprocessing(comm, pre)
                pre.fit_end()
        x_tr, x_va = tens(xa[tr]), tens(xa[val_mask])
        c_tr = tens(None if ca is None else ca[tr])
        c_va = tens(None if ca is None else ca[val_mask])
        w_tr = tens(None if wa is None else wa[tr])
        w_va = tens(None if wa is None else wa[val_mask])

    has_val = validation_split > 0
    history = History()
    params = [p for p in model.parameters() if p.requires_grad]
    reg = flow.conditioner_weights()
    show = bool(progress) if progress != "auto" else bool(getattr(sys.stderr, "isatty", lambda: False)())
    local_batch = batch_size
    if comm is not None:
        show = show and comm.rank == 0
        local_batch = -(-batch_size // comm.size)
        comm.broadcast_module(model)

    def penalty() -> torch.Tensor | float:
        out: torch.Tensor | float = 0.0
        if l1 > 0:
            out = out + l1 * sum(w.abs().sum() for w in reg)
        if l2 > 0:
            out = out + l2 * sum((w * w).sum() for w in reg)
        return out

    def make_opt(rate: float):
        opt = torch.optim.Adam(params, lr=rate)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=lr_factor, patience=lr_patience, min_lr=min_lr
        )
        return opt, sched

    def train_batches(gen: torch.Generator):
        if streamed:
            for xa_, ca_, wa_, mask in chunks():
                tr_ = ~mask
                xt, ct = tens(xa_[tr_]), tens(None if ca_ is None else ca_[tr_])
                wt = tens(None if wa_ is None else wa_[tr_])
                order = torch.randperm(xt.shape[0], generator=gen, device="cpu").to(device)
                for s in range(0, xt.shape[0], local_batch):
                    idx = order[s : s + local_batch]
                    yield xt[idx], None if ct is None else ct[idx], None if wt is None else wt[idx]
        else:
            order = torch.randperm(x_tr.shape[0], generator=gen, device="cpu").to(device)
            for s in range(0, x_tr.shape[0], local_batch):
                idx = order[s : s + local_batch]
                yield x_tr[idx], None if c_tr is None else c_tr[idx], None if w_tr is None else w_tr[idx]

    def val_batches():
        big = max(batch_size, 8192)
        if streamed:
            for xa_, ca_, wa_, mask in chunks():
                xt, ct = tens(xa_[mask]), tens(None if ca_ is None else ca_[mask])
                wt = tens(None if wa_ is None else wa_[mask])
                for s in range(0, xt.shape[0], big):
                    sl = slice(s, s + big)
                    yield xt[sl], None if ct is None else ct[sl], None if wt is None else wt[sl]
        else:
            for s in range(0, x_va.shape[0], big):
                sl = slice(s, s + big)
                yield x_va[sl], None if c_va is None else c_va[sl], None if w_va is None else w_va[sl]

    def evaluate() -> float:
        was = model.training
        model.eval()
        num, den = 0.0, 0.0
        with torch.no_grad():
            for xb, cb, wb in val_batches():
                a, b = _nll_sum(model, xb, cb, wb)
                num += float(a)
                den += float(b)
        model.train(was)
        if comm is not None:
            num, den = comm.sum([num, den])
        return num / den if den > 0 else math.nan

    best_state = copy.deepcopy(model.state_dict())
    rate = float(lr)
    opt, sched = make_opt(rate)
    since_best = 0
    consecutive = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if comm is not None:
            # each rank its own dropout masks and batch order; ActNorm initialised identically everywhere
            torch.manual_seed(seed + 1_000_003 * comm.rank)
            gen = torch.Generator().manual_seed(seed + 1_000_003 * comm.rank)
            _init_actnorm(comm, model, flow, train_batches(torch.Generator().manual_seed(seed)))
            bn_buffers = _batch_norm_buffers(model)
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, desc="nfhep train", unit="epoch", file=sys.stderr, leave=True)
        try:
            history.stop_reason = "max_epochs"
            for epoch in range(epochs):
                t0 = time.perf_counter()
                model.train()
                rate = opt.param_groups[0]["lr"]
                num, den, failed_at = 0.0, 0.0, None
                if comm is not None:
                    num, den, failed_at = _distributed_epoch(
                        comm, model, opt, params, train_batches(gen), penalty, clip_grad_norm, bn_buffers
                    )
                for b, (xb, cb, wb) in enumerate(train_batches(gen) if comm is None else ()):
                    opt.zero_grad(set_to_none=True)
                    nll, wsum = _nll_sum(model, xb, cb, wb)
                    if not float(wsum) > 0:
                        continue
                    loss = nll / wsum + penalty()
                    if not torch.isfinite(loss):
                        failed_at = b
                        break
                    loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(
                        params, clip_grad_norm if clip_grad_norm is not None else math.inf
                    )
                    if not torch.isfinite(gnorm):
                        failed_at = b
                        break
                    opt.step()
                    num += float(nll.detach())
                    den += float(wsum)
                train_loss = num / den if den > 0 else math.nan
                val_loss = evaluate() if has_val else train_loss
                if failed_at is None and not math.isfinite(val_loss):
                    failed_at = -1  # the weights after the epoch give a non-finite validation loss
                history.lr.append(rate)
                history.seconds.append(time.perf_counter() - t0)
                if failed_at is not None:
                    history.loss.append(math.nan)
                    history.val_loss.append(math.nan)
                    history.failures.append({"epoch": epoch, "batch": failed_at, "lr": rate})
                    consecutive += 1
                    model.load_state_dict(best_state)
                    if consecutive >= max_failures:
                        history.stop_reason = (
                            f"non_finite: the loss was NaN/inf in {consecutive} consecutive epochs "
                            f"(last at epoch "
                            f"{epoch}, batch {failed_at}, lr {rate:.3g}); the best weights (epoch "
                            f"{history.best_epoch}) were restored"
                        )
                        break
                    rate = max(rate * lr_factor, min_lr)
                    opt, sched = make_opt(rate)
                    since_best += 1
                else:
                    consecutive = 0
                    history.loss.append(train_loss)
                    history.val_loss.append(val_loss)
                    if val_loss < history.best_val_loss:
                        history.best_val_loss = val_loss
                        history.best_epoch = epoch
                        best_state = copy.deepcopy(model.state_dict())
                        since_best = 0
                    else:
                        since_best += 1
                    sched.step(val_loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{history.loss[-1]:.4f}",
                        val_loss=f"{history.val_loss[-1]:.4f}",
                        lr=f"{rate:.2g}",
                    )
                if since_best > 0 and since_best >= patience:
                    history.stop_reason = "early_stopping"
                    break
        finally:
            if bar is not None:
                bar.close()
    model.load_state_dict(best_state)
    if comm is not None:
        comm.broadcast_module(model)  # guard against any drift: rank 0's weights everywhere
    model.eval()
    return history


# -- data-parallel pieces (nfhep.distributed) -------------------------------------------------------------
def _merge_preprocessing(comm, pre) -> None:
    """Merge the streamed-fit accumulators of every rank (so all ranks get the same preprocessing)."""
    comm.merge_moments(pre._acc)
    if getattr(pre, "_acc_c", None) is not None:
        comm.merge_moments(pre._acc_c)


def _batch_norm_buffers(model: nn.Module) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.extend(t for t in (m.running_mean, m.running_var) if t is not None)
    return out


def _init_actnorm(comm, model: nn.Module, flow, batches) -> None:
    """Run ActNorm's data-dependent initialisation once, on the first batches of all ranks concatenated.

    Every rank runs the same no-grad forward on the same rows, then rank 0's state is broadcast; the
    other modules' buffers (batch-norm running statistics) are restored to what they were before.
    """
    from .flows.transforms import ActNorm

    acts = [m for m in model.modules() if isinstance(m, ActNorm)]
    if not any(not bool(m.initialized) for m in acts):
        return
    first = next(iter(batches), None)
    local = None if first is None else tuple(None if t is None else t.cpu().numpy() for t in first)
    parts = [p for p in comm.gather_objects(local) if p is not None]
    if not parts:
        return
    dtype = next(model.parameters()).dtype
    xb = torch.as_tensor(np.concatenate([p[0] for p in parts]), dtype=dtype)
    cb = None if parts[0][1] is None else torch.as_tensor(np.concatenate([p[1] for p in parts]), dtype=dtype)
    keep = {id(t) for m in acts for t in list(m.parameters()) + list(m.buffers())}
    saved = [(t, t.detach().clone()) for t in model.buffers() if id(t) not in keep]
    was = model.training
    model.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        model.log_prob(xb, cb)
    model.train(was)
    with torch.no_grad():
        for t, v in saved:
            t.copy_(v)
    comm.broadcast_module(model)


def _distributed_epoch(comm, model, opt, params, batches, penalty, clip_grad_norm, bn_buffers):
    """One epoch of synchronous data-parallel steps; returns (nll sum, weight sum, failed batch or None).

    Ranks step together until no rank has a batch left (a rank whose shard is exhausted contributes
    nothing to the remaining steps). Per step one all-reduce of (has batch, NLL sum, weight sum,
    non-finite flag) — so every rank takes the same skip / fail decision — and one of the gradients.
    """
    it = iter(batches)
    num, den = 0.0, 0.0
    b = 0
    while True:
        batch = next(it, None)
        nll = None
        if batch is not None:
            xb, cb, wb = batch
            nll, wsum = _nll_sum(model, xb, cb, wb)
            stats = [1.0, float(nll.detach()), float(wsum), 0.0 if torch.isfinite(nll) else 1.0]
        else:
            stats = [0.0, 0.0, 0.0, 0.0]
        has, nll_tot, w_tot, bad = comm.sum(stats)
        if has == 0:
            return num, den, None
        if not w_tot > 0:
            b += 1
            continue
        pen = penalty() if comm.rank == 0 else 0.0
        if bad > 0 or not math.isfinite(nll_tot) or not math.isfinite(float(pen)):
            return num, den, b
        opt.zero_grad(set_to_none=True)
        loss = pen
        if nll is not None:
            loss = nll / w_tot + pen
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        comm.sum_grads(params)
        gnorm = torch.nn.utils.clip_grad_norm_(
            params, clip_grad_norm if clip_grad_norm is not None else math.inf
        )
        if not torch.isfinite(gnorm):
            return num, den, b
        opt.step()
        if bn_buffers:
            comm.average_(bn_buffers)
        num += nll_tot
        den += w_tot
        b += 1

"""nfhep.train.fit: every training feature on tiny problems (seconds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import nfhep.train as ntrain
from nfhep.model import Model
from nfhep.train import History, _split_mask, fit


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small networks: torch's intra-op threads only add contention on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal([1.0, -2.0], [[1.0, 0.8], [0.8, 1.5]], n)
    return x


def _model(family="maf", dtype=torch.float32, **kw):
    torch.manual_seed(0)
    opts = dict(bijectors=2, hidden=[16])
    opts.update(kw)
    return Model.create(family, ["a", "b"], **opts).to(dtype)


def _val_loss(model, x, seed=0, split=0.2):
    mask = _split_mask(len(x), split, np.random.default_rng(seed))
    with torch.no_grad():
        return float(-model.log_prob(x[mask]).mean())


def test_training_reduces_loss_and_restores_best():
    x = _data()
    m = _model()
    h = fit(m, x, epochs=8, batch_size=64, lr=5e-3, progress=False)
    assert len(h.loss) == len(h.val_loss) == len(h.lr) == len(h.seconds) == 8
    assert h.stop_reason == "max_epochs"
    assert h.val_loss[-1] < h.val_loss[0] < 4.0
    assert h.best_epoch == int(np.argmin(h.val_loss)) and h.best_val_loss == min(h.val_loss)
    assert _val_loss(m, x) == pytest.approx(h.best_val_loss, rel=1e-5)  # the model holds the best weights
    assert not m.training
    # the preprocessing was fitted on the training rows only
    tr = ~_split_mask(len(x), 0.2, np.random.default_rng(0))
    np.testing.assert_allclose(m.preprocessing.mean.numpy(), x[tr].mean(0), rtol=1e-5)


def test_early_stopping_when_nothing_improves():
    """lr = 1e-300: the weights cannot move, the validation loss is constant -> stop after `patience`."""
    m = _model(dtype=torch.float64)
    h = fit(m, _data(), epochs=50, batch_size=128, lr=1e-300, patience=3, progress=False)
    assert h.stop_reason == "early_stopping"
    assert h.best_epoch == 0 and len(h.loss) == 4


def test_lr_reduced_on_plateau():
    """lr 1e-6: improvements are below ReduceLROnPlateau's relative threshold (1e-4) -> plateau."""
    m = _model(dtype=torch.float64)
    h = fit(
        m,
        _data(200),
        epochs=9,
        batch_size=100,
        lr=1e-6,
        lr_factor=0.5,
        lr_patience=1,
        min_lr=1e-9,
        patience=100,
        progress=False,
    )
    lrs = np.array(h.lr)
    assert np.all(np.diff(lrs) <= 0)
    drops = lrs[1:][np.diff(lrs) < 0] / lrs[:-1][np.diff(lrs) < 0]
    assert len(drops) >= 2 and np.allclose(drops, 0.5)
    h2 = fit(
        _model(dtype=torch.float64),
        _data(200),
        epochs=9,
        batch_size=100,
        lr=1e-6,
        lr_factor=0.5,
        lr_patience=1,
        min_lr=4e-7,
        patience=100,
        progress=False,
    )
    assert min(h2.lr) == pytest.approx(4e-7)  # floored at min_lr


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_regularisation_shrinks_conditioner_weights(kind):
    x = _data()

    def norm(model):
        ws = model.flow.conditioner_weights()
        return sum(
            float(w.detach().abs().sum()) if kind == "l1" else float((w.detach() ** 2).sum()) for w in ws
        )

    m0, m1 = _model(), _model()
    fit(m0, x, epochs=4, batch_size=64, lr=5e-3, progress=False)
    fit(m1, x, epochs=4, batch_size=64, lr=5e-3, progress=False, **{kind: 0.05})
    assert norm(m1) < 0.8 * norm(m0)


def test_gradient_clipping_is_applied(monkeypatch):
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        total = original(params, max_norm, *a, **k)
        after = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params if p.grad is not None))
        seen.append((max_norm, float(total), after))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    fit(_model(), _data(200), epochs=2, batch_size=50, clip_grad_norm=0.01, progress=False)
    assert seen and all(mx == 0.01 for mx, _, _ in seen)
    assert any(tot > 0.01 for _, tot, _ in seen)
    assert all(after <= 0.01 * (1 + 1e-4) for _, _, after in seen)


def _inject_nan(model, bad_calls):
    """Make the flow's log_prob return NaN on the given (training-mode) call numbers."""
    flow = model.flow
    original = flow.log_prob
    count = {"n": 0}

    def wrapped(x, context=None):
        out = original(x, context)
        if flow.training:
            count["n"] += 1
            if count["n"] in bad_calls:
                return out * float("nan")
        return out

    flow.log_prob = wrapped  # instance attribute shadows the method
    return count


def test_nan_once_restores_best_reduces_lr_and_continues():
    x = _data(400)
    m = _model()
    # 320 training rows / 64 = 5 batches per epoch: call 13 is in epoch 2
    _inject_nan(m, {13})
    h = fit(m, x, epochs=5, batch_size=64, lr=4e-3, lr_factor=0.25, progress=False)
    assert h.failures == [{"epoch": 2, "batch": 2, "lr": 4e-3}]
    assert math.isnan(h.loss[2]) and all(math.isfinite(v) for i, v in enumerate(h.loss) if i != 2)
    assert h.lr[3] == pytest.approx(1e-3)
    assert h.stop_reason == "max_epochs"
    assert all(torch.isfinite(p).all() for p in m.parameters())
    d = h.to_dict()
    assert d["loss"][2] is None and json.loads(json.dumps(d)) == d


def test_nan_repeatedly_stops_with_message_and_best_weights():
    x = _data(400)
    m = _model()
    _inject_nan(m, set(range(6, 10_000)))  # everything after the first epoch fails
    h = fit(m, x, epochs=20, batch_size=64, max_failures=3, progress=False)
    assert h.stop_reason.startswith("non_finite: the loss was NaN/inf in 3 consecutive epochs")
    assert len(h.failures) == 3 and h.best_epoch == 0
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert _val_loss(m, x) == pytest.approx(h.best_val_loss, rel=1e-5)


def test_weights_change_the_fit():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, (300, 2)), rng.normal(2, 0.5, (300, 2))])
    w = np.concatenate([np.full(300, 1.0), np.full(300, 0.05)])
    probe = torch.tensor([[-2.0, -2.0], [2.0, 2.0]])
    m_u, m_w = _model("crqs"), _model("crqs")
    fit(m_u, x, epochs=6, batch_size=64, lr=5e-3, progress=False)
    fit(m_w, x, weights=w, epochs=6, batch_size=64, lr=5e-3, progress=False)
    with torch.no_grad():
        lu, lw = m_u.log_prob(probe), m_w.log_prob(probe)
    assert abs(float(lu[0] - lu[1])) < 1.0  # balanced clusters
    assert float(lw[0] - lw[1]) > 1.5  # the down-weighted cluster lost density
    # the weighted preprocessing moved towards the heavy cluster
    assert float(m_w.preprocessing.mean[0]) < -1.0


def test_seed_reproducible():
    x = _data(300)
    a, b, c = _model(), _model(), _model()
    ha = fit(a, x, epochs=3, batch_size=32, progress=False, seed=1)
    hb = fit(b, x, epochs=3, batch_size=32, progress=False, seed=1)
    hc = fit(c, x, epochs=3, batch_size=32, progress=False, seed=2)
    assert ha.loss == hb.loss and ha.val_loss == hb.val_loss
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert ha.loss != hc.loss
    # the global RNG is untouched
    d = _model()
    torch.manual_seed(123)
    r1 = torch.rand(1)
    torch.manual_seed(123)
    fit(d, x, epochs=1, progress=False)
    assert torch.equal(torch.rand(1), r1)


class _Stream:
    def __init__(self, x, c=None, w=None, chunk=150):
        self.x, self.c, self.w, self.chunk = x, c, w, chunk
        self.n_entries = len(x)
        self.calls = []

    def iter_chunks(self, shuffle_seed=None):
        self.calls.append(shuffle_seed)
        for s in range(0, self.n_entries, self.chunk):
            sl = slice(s, s + self.chunk)
            yield {
                "x": self.x[sl],
                "context": None if self.c is None else self.c[sl],
                "weights": None if self.w is None else self.w[sl],
            }


def test_streamed_input_with_context():
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, (600, 1))
    x = _data(600) + 2 * c
    src = _Stream(x, c)
    torch.manual_seed(0)
    m = Model.create("arqs", ["a", "b"], context_features=["c"], hidden=[16], knots=4)
    h = fit(m, src, epochs=4, batch_size=64, lr=5e-3, progress=False)
    assert len(h.loss) == 4 and h.val_loss[-1] < h.val_loss[0]
    # preprocessing from one streamed pass over the training rows (seeded 20% of each chunk held out)
    tr = np.concatenate([~_split_mask(150, 0.2, np.random.default_rng([0, k])) for k in range(4)])
    np.testing.assert_allclose(m.preprocessing.mean.numpy(), x[tr].mean(0), rtol=1e-5)
    np.testing.assert_allclose(m.preprocessing.context_mean.numpy(), c[tr].mean(0), rtol=1e-5, atol=1e-6)
    assert all(s is None for s in src.calls)
    with pytest.raises(ValueError, match="context and weights come from its chunks"):
        fit(m, src, weights=np.ones(600), progress=False)


def test_float64_training_and_no_validation():
    m = _model("realnvp", dtype=torch.float64)
    h = fit(m, _data(300), epochs=3, validation_split=0.0, progress=False)
    assert h.val_loss == h.loss and all(math.isfinite(v) for v in h.loss)
    assert next(m.parameters()).dtype == torch.float64


def test_progress_bar(capsys):
    fit(_model(), _data(200), epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "nfhep train" in err and "val_loss" in err and "lr" in err
    fit(_model(), _data(200), epochs=2, progress=False)
    fit(_model(), _data(200), epochs=2, progress="auto")  # not a terminal under pytest
    assert capsys.readouterr().err == ""


def test_history_save(tmp_path):
    h = fit(_model(), _data(200), epochs=2, progress=False)
    assert isinstance(h, History)
    p = tmp_path / "h.json"
    h.save(p)
    d = json.loads(p.read_text())
    assert d["best_epoch"] == h.best_epoch and len(d["loss"]) == 2 and d["stop_reason"] == "max_epochs"
    assert [f.name for f in tmp_path.iterdir()] == ["h.json"]


def test_argument_errors():
    m = _model()
    x = _data(50)
    with pytest.raises(ValueError, match="'epochs'"):
        fit(m, x, epochs=-1)
    with pytest.raises(ValueError, match="'validation_split'"):
        fit(m, x, validation_split=1.0)
    with pytest.raises(ValueError, match="'x' has 3 features"):
        fit(m, np.zeros((10, 3)))
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"'x' has 1 row\(s\) with NaN/inf"):
        fit(m, bad)
    with pytest.raises(ValueError, match="'weights' has 2 negative"):
        w = np.ones(50)
        w[:2] = -1
        fit(m, x, weights=w)
    with pytest.raises(ValueError, match="no context features"):
        fit(m, x, context=np.zeros((50, 1)))
    with pytest.raises(ValueError, match="'progress'"):
        fit(m, x, progress="yes")
    assert ntrain.__all__ == ["History", "fit"]

"""Learning works: every family fits a 4-D correlated mixture of Gaussians with a known density.

Margin: the test NLL (on 20,000 fresh events) must be within ``MARGIN`` nats of the true NLL (the
entropy estimate from the true density on the same events) after a short CPU run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from nfhep.model import Model
from nfhep.train import fit


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small networks: torch's intra-op threads only add contention on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MARGIN = 0.15  # nats per event

_MEANS = [np.array([-1.5, 0.0, 1.0, 0.5]), np.array([1.5, 1.0, -1.0, -0.5])]
_WEIGHTS = [0.4, 0.6]


def _covs():
    rng = np.random.default_rng(1)
    out = []
    for _ in range(2):
        a = rng.normal(size=(4, 4))
        out.append(a @ a.T / 4 + 0.3 * np.eye(4))
    return out


def cmog_sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    covs = _covs()
    first = rng.random(n) < _WEIGHTS[0]
    a = rng.multivariate_normal(_MEANS[0], covs[0], n)
    b = rng.multivariate_normal(_MEANS[1], covs[1], n)
    return np.where(first[:, None], a, b)


def cmog_log_prob(x: np.ndarray) -> np.ndarray:
    covs = _covs()
    return np.logaddexp(
        np.log(_WEIGHTS[0]) + multivariate_normal(_MEANS[0], covs[0]).logpdf(x),
        np.log(_WEIGHTS[1]) + multivariate_normal(_MEANS[1], covs[1]).logpdf(x),
    )


RECIPES = {
    "maf": dict(bijectors=5, hidden="2x64"),
    "realnvp": dict(bijectors=6, hidden="2x64"),
    "crqs": dict(bijectors=4, hidden="2x64", knots=8, range=4.0),
    "arqs": dict(bijectors=2, hidden="2x64", knots=8, range=4.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(RECIPES))
def test_family_learns_cmog(family):
    x_train = cmog_sample(6000, seed=10)
    x_test = cmog_sample(20000, seed=11)
    true_nll = float(-cmog_log_prob(x_test).mean())
    torch.manual_seed(0)
    model = Model.create(family, [f"x{i}" for i in range(4)], **RECIPES[family])
    hist = fit(
        model, x_train, epochs=25, batch_size=256, lr=3e-3, patience=6, lr_patience=3, progress=False, seed=0
    )
    with torch.no_grad():
        nll = float(-model.log_prob(torch.tensor(x_test, dtype=torch.float32)).mean())
    print(
        f"{family}: test NLL {nll:.4f}, true {true_nll:.4f}, gap {nll - true_nll:.4f}, "
        f"epochs {len(hist.loss)}"
    )
    assert nll - true_nll < MARGIN
    assert nll - true_nll > -0.05  # cannot beat the truth by more than the test-set noise

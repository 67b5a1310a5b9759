r"""A synthetic collider-like ntuple with every kind of feature real analysis ntuples have.

:func:`collider_toy` draws ``n`` events of a deterministic (seeded) generator with 12 features:

============  ============================================================================================
``lep_pt``    lepton :math:`p_T` [GeV]: 25 + Exponential(28) (a sharp trigger threshold, a long tail)
``lep_eta``   lepton :math:`\eta`: a normal of width 1.1 cut to :math:`|\eta| < 2.5` (detector acceptance)
``lep_phi``   lepton :math:`\phi`: uniform on :math:`[-\pi, \pi)` (periodic)
``met``       missing :math:`E_T` [GeV]: Rayleigh-like, :math:`\sqrt{(0.1 p_T + 15)^2 (\chi^2_2)}`
``met_phi``   :math:`\phi` of the MET: the lepton's :math:`\phi + \pi` plus a von Mises-like spread (periodic,
              correlated with ``lep_phi``)
``njets``     jet multiplicity: 1 + Poisson(1.3), at most 8 (discrete)
``jet1_pt``   leading jet :math:`p_T` [GeV]: 30 + lognormal, correlated with ``lep_pt``
``jet1_eta``  leading jet :math:`\eta`: normal of width 1.4 cut to :math:`|\eta| < 4.5`
``jet2_pt``   second jet :math:`p_T` [GeV]: 0 when ``njets == 1`` (zero padding: a spike), else
              30 + a fraction of ``jet1_pt - 30``
``jet1_btag`` b-tag working point of the leading jet: 0, 0.6, 0.77, 0.85 (discrete; more often tagged at
              higher :math:`p_T`)
``mjj``       dijet mass [GeV]: 0 when ``njets == 1`` (spike), else
              :math:`\sqrt{2 p_{T1} p_{T2} (\cosh\Delta\eta - \cos\Delta\phi)}` with a random second jet
``ht``        scalar sum :math:`p_T` [GeV] of the lepton and jets plus extra jets (positive, heavy-tailed)
============  ============================================================================================

The same ``seed`` gives the same events on every machine (numpy's PCG64).
"""

from __future__ import annotations

import numpy as np

__all__ = ["collider_toy", "COLLIDER_FEATURES"]

COLLIDER_FEATURES = (
    "lep_pt",
    "lep_eta",
    "lep_phi",
    "met",
    "met_phi",
    "njets",
    "jet1_pt",
    "jet1_eta",
    "jet2_pt",
    "jet1_btag",
    "mjj",
    "ht",
)


def _truncated_normal(rng: np.random.Generator, n: int, sigma: float, cut: float) -> np.ndarray:
    out = rng.normal(0.0, sigma, n)
    bad = np.abs(out) >= cut
    while bad.any():
        out[bad] = rng.normal(0.0, sigma, int(bad.sum()))
        bad = np.abs(out) >= cut
    return out


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def collider_toy(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` events of the collider-like toy (``{feature: float64 array}``, see the module doc)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"collider_toy: argument 'n' must be a non-negative integer, got {n!r}")
    rng = np.random.default_rng(seed)
    n = int(n)
    lep_pt = 25.0 + rng.exponential(28.0, n)
    lep_eta = _truncated_normal(rng, n, 1.1, 2.5)
    lep_phi = rng.uniform(-np.pi, np.pi, n)
    met = (0.1 * lep_pt + 15.0) * np.sqrt(rng.chisquare(2, n))
    met_phi = _wrap(lep_phi + np.pi + rng.normal(0.0, 0.9, n))
    njets = np.minimum(1 + rng.poisson(1.3, n), 8).astype(np.float64)
    jet1_pt = 30.0 + np.exp(rng.normal(3.3, 0.6, n)) * (0.6 + 0.008 * lep_pt)
    jet1_eta = _truncated_normal(rng, n, 1.4, 4.5)
    frac = rng.beta(2.0, 2.5, n)
    two = njets >= 2
    jet2_pt = np.where(two, 30.0 + frac * (jet1_pt - 30.0), 0.0)
    p_tag = 0.15 + 0.25 * (jet1_pt > 60)
    u = rng.random(n)
    wp = np.select([u < p_tag * 0.5, u < p_tag * 0.8, u < p_tag], [0.85, 0.77, 0.6], 0.0)
    deta = rng.normal(0.0, 1.6, n)
    dphi = rng.uniform(-np.pi, np.pi, n)
    mjj = np.where(
        two, np.sqrt(2.0 * jet1_pt * np.maximum(jet2_pt, 1.0) * (np.cosh(deta) - np.cos(dphi))), 0.0
    )
    extra = np.where(njets > 2, (njets - 2) * 30.0 + rng.exponential(20.0, n) * (njets - 2), 0.0)
    ht = lep_pt + jet1_pt + jet2_pt + extra
    cols = {
        "lep_pt": lep_pt,
        "lep_eta": lep_eta,
        "lep_phi": lep_phi,
        "met": met,
        "met_phi": met_phi,
        "njets": njets,
        "jet1_pt": jet1_pt,
        "jet1_eta": jet1_eta,
        "jet2_pt": jet2_pt,
        "jet1_btag": wp.astype(np.float64),
        "mjj": mjj,
        "ht": ht,
    }
    return {k: cols[k] for k in COLLIDER_FEATURES}

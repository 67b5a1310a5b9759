"""The mode counter of the feature analysis, and where it changes the decisions: a far small component of
a mixture is not a heavy tail (no log), a multimodal feature is not Gaussianised, and the spline families'
default ``quantile="mixed"`` maps only the mixed (spike + continuum) features."""

from __future__ import annotations

import numpy as np
import pytest

from nfhep.cli.train import quantile_default
from nfhep.feature_analysis import QUANTILE_MODES, analyze_features, count_modes


@pytest.mark.parametrize("n", [500, 5000, 100_000])
def test_unimodal_shapes_have_one_mode(n):
    r = np.random.default_rng(n)
    for name, v in {
        "normal": r.normal(size=n),
        "exponential": r.exponential(size=n),
        "lognormal": r.lognormal(0.0, 1.0, size=n),
        "uniform": r.uniform(size=n),
        "laplace": r.laplace(size=n),
        "cauchy": r.standard_cauchy(size=n),
        "gamma(2)": r.gamma(2.0, size=n),
        "two close normals (unimodal sum)": np.r_[r.normal(0, 1, n // 2), r.normal(2, 1, n - n // 2)],
    }.items():
        assert count_modes(v) == 1, name


@pytest.mark.parametrize("n", [500, 5000, 100_000])
def test_separated_components_are_counted(n):
    r = np.random.default_rng(n + 1)
    assert count_modes(np.r_[r.normal(0, 1, n // 2), r.normal(4, 1, n - n // 2)]) == 2
    three = np.r_[r.normal(0, 0.3, n // 3), r.normal(3, 0.5, n // 3), r.normal(7, 0.4, n - 2 * (n // 3))]
    assert count_modes(three) == 3


def test_a_small_far_component_needs_enough_rows_to_be_seen():
    r = np.random.default_rng(7)
    for n, expect in ((500, 1), (5000, 2), (100_000, 2)):  # 4% of 500 rows is 20: within the noise
        v = np.r_[r.normal(0, 1, n - n // 25), r.normal(8, 0.3, n // 25)]
        assert count_modes(v) == expect, n


def test_degenerate_inputs():
    assert count_modes(np.zeros(0)) == 1
    assert count_modes(np.ones(1000)) == 1
    assert count_modes(np.array([np.nan, np.inf] * 40)) == 1
    assert count_modes(np.arange(10.0)) == 1


def _mixture(n: int, seed: int = 0) -> np.ndarray:
    """Column 0: positive mixture with a far small component (ratio test says 'heavy'); 1: a lognormal
    (a real heavy tail); 2: a bimodal mixture; 3: a normal; 4: zero-padded (spike) with a lognormal."""
    r = np.random.default_rng(seed)
    c0 = np.where(r.uniform(size=n) < 0.05, r.normal(9.0, 0.2, n), r.normal(3.0, 0.4, n))
    c1 = r.lognormal(3.0, 0.8, n)
    c2 = np.where(r.uniform(size=n) < 0.5, r.normal(-3.0, 0.5, n), r.normal(3.0, 0.7, n))
    c3 = r.normal(size=n)
    c4 = np.where(r.uniform(size=n) < 0.3, 0.0, r.lognormal(4.0, 0.5, n))
    return np.stack([c0, c1, c2, c3, c4], 1)


NAMES = ["mix_far", "heavy", "bimodal", "normal", "padded"]


def test_far_component_is_not_a_heavy_tail():
    a = analyze_features(_mixture(20_000), NAMES, quantile=False)
    d = {x.name: x for x in a.decisions}
    assert not d["mix_far"].log and d["mix_far"].kind == "continuous"
    assert "modes" in d["mix_far"].reason
    assert d["heavy"].log  # a lognormal keeps its log


def test_quantile_modes_select_features():
    x = _mixture(20_000)
    every = {d.name: d for d in analyze_features(x, NAMES, quantile=True).decisions}
    # multimodal continuous features are not Gaussianised, the reason says so; the rest are
    assert every["bimodal"].quantile is None and "not Gaussianised" in every["bimodal"].reason
    assert every["mix_far"].quantile is None
    for name in ("heavy", "normal", "padded"):
        assert every[name].quantile is not None, name
    mixed = {d.name: d for d in analyze_features(x, NAMES, quantile="mixed").decisions}
    assert [n for n, d in mixed.items() if d.quantile is not None] == ["padded"]
    none = analyze_features(x, NAMES, quantile=False).decisions
    assert all(d.quantile is None for d in none)
    # a declaration wins over the mode, both ways (and over the mode counter)
    decl = {"bimodal": {"quantile": True}, "padded": {"quantile": False}, "normal": {"quantile": True}}
    forced = {d.name: d for d in analyze_features(x, NAMES, quantile="mixed", declared=decl).decisions}
    assert forced["bimodal"].quantile is not None
    assert forced["normal"].quantile is not None
    assert forced["padded"].quantile is None
    assert forced["heavy"].quantile is None
    with pytest.raises(ValueError, match="'quantile' must be one of"):
        analyze_features(x, NAMES, quantile="some")
    assert QUANTILE_MODES == (True, False, "mixed")


def test_train_quantile_default_per_family():
    assert quantile_default({"flow": "maf"}) is True
    assert quantile_default({"flow": "realnvp"}) is True
    assert quantile_default({"flow": "arqs"}) == "mixed"
    assert quantile_default({"flow": "crqs"}) == "mixed"
    assert quantile_default({"flow": "arqs", "quantile": True}) is True
    assert quantile_default({"flow": "maf", "quantile": False}) is False


def test_train_quantile_option_values():
    """A --config file may say quantile = "mixed" (the spline families' default) or a boolean; anything
    else is refused with the option's name rather than read as a truth value."""
    assert quantile_default({"flow": "maf", "quantile": "mixed"}) == "mixed"
    assert quantile_default({"flow": "maf", "quantile": " Mixed "}) == "mixed"
    assert quantile_default({"flow": "arqs", "quantile": 0}) is False
    for bad in ("yes", "all", 0.5, [True]):
        with pytest.raises(ValueError, match="option 'quantile' must be true, false or \"mixed\""):
            quantile_default({"flow": "arqs", "quantile": bad})

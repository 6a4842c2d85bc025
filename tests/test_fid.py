"""FID and KID: torchmetrics on features computed once, checked against a direct computation."""

import numpy as np
import pytest
import scipy.linalg
import torch

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.fid import FeatureDistances, load_feature_extractor


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½), from the definition."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root))


def images(seed, n, shift=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 1, 4, 4), generator=g) * 200 + shift).round().to(torch.uint8)


def test_fid_and_kid_match_their_definitions():
    real, fake = images(0, 300), images(1, 200, shift=30)
    metric = FeatureDistances(load_feature_extractor("helpers:PixelFeatures"), (1, 4, 4), kid_subsets=20,
                              kid_subset_size=100)
    for chunk in real.split(64):
        metric.update(chunk, real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    a, b = (x[:, 0].flatten(1).double().numpy() / 255 for x in (real, fake))
    assert result["fid"] == pytest.approx(frechet(a, b), rel=1e-4)
    k = lambda x, y: (x @ y.T / 16 + 1) ** 3  # noqa: E731  KID's cubic kernel, d = 16 features
    m = len(b)
    mmd = ((k(a, a).sum() - np.trace(k(a, a))) / (len(a) * (len(a) - 1))
           + (k(b, b).sum() - np.trace(k(b, b))) / (m * (m - 1)) - 2 * k(a, b).mean())
    assert result["kid"] == pytest.approx(mmd, rel=0.15)  # subsets of 100: an estimate of the full MMD²
    metric.reset_generated()  # the reference stays
    metric.update(images(2, 200), real=False)
    same = metric.compute()
    assert same["fid"] < 0.2 * result["fid"] and abs(same["kid"]) < 0.1 * result["kid"]  # finite-sample bias only


def test_bad_extractors_are_named():
    with pytest.raises(ConfigError, match="unknown feature extractor 'nope'"):
        load_feature_extractor("nope")
    with pytest.raises(ConfigError, match="Inception weights not found: /no/file.pth"):
        load_feature_extractor("inception", "/no/file.pth")


def test_inception_from_a_local_weights_file(tmp_path, monkeypatch):
    """The FID Inception built offline from a weights file (random weights stand in for the published ones)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as patch:  # build once without weights, to write a file of the right layout
        patch.setattr(torch, "load", lambda *a, **k: None)
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        torch.save(load_feature_extractor("inception", __file__).state_dict(), tmp_path / "inception.pth")
    extractor = load_feature_extractor("inception", str(tmp_path / "inception.pth"))
    metric = FeatureDistances(extractor, (1, 28, 28), kid_subsets=2, kid_subset_size=2)
    metric.update(images(0, 3).repeat_interleave(7, -1).repeat_interleave(7, -2), real=True)
    metric.update(images(1, 3).repeat_interleave(7, -1).repeat_interleave(7, -2), real=False)
    assert metric.fid.real_features_sum.shape == (2048,)
    assert np.isfinite(metric.compute()["fid"])

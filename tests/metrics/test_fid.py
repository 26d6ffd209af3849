import numpy as np
import pytest
import torch

from spm_gen import SPMClassifier
from spm_gen.metrics import fid
from tests.conftest import make_images


def _gaussian(mean: np.ndarray, var: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Samples whose empirical mean and covariance are exactly `mean` and diag(`var`)."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: cov(z) = I
    return z * np.sqrt(var) + mean


def test_fid_equals_the_closed_form_for_gaussians():
    m1, v1 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 2.0, 0.5, 3.0])
    m2, v2 = np.array([1.0, 1.0, 0.0, 0.0]), np.array([2.0, 2.0, 1.0, 0.25])
    a, b = _gaussian(m1, v1, 500, 0), _gaussian(m2, v2, 700, 1)
    closed_form = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert fid.fid_from_features(a, b) == pytest.approx(closed_form, rel=1e-6)
    assert fid.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


def _classifier():
    torch.manual_seed(0)
    return SPMClassifier(image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, head="linear").eval()


def test_domain_fid_goes_through_clean_fid_at_native_resolution(tmp_path):
    classifier = _classifier()
    a, b = make_images(40, seed=1), make_images(30, seed=2) * 0.5
    fid.save_images(a, str(tmp_path / "a"))
    fid.save_images(b, str(tmp_path / "b"))
    result = fid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), classifier=classifier, seed=3)
    assert result["num_images"] == [40, 30] and result["feature_extractor"] == "domain" and result["seed"] == 3
    with torch.no_grad():  # the same features as embedding the tensors directly (PNG round trip is exact)
        direct = fid.fid_from_features(classifier.embed(a).numpy(), classifier.embed(b).numpy())
    assert result["fid"] == pytest.approx(direct, rel=1e-3)
    same = fid.compute_fid(str(tmp_path / "a"), str(tmp_path / "a"), classifier=classifier)
    assert same["fid"] == pytest.approx(0.0, abs=1e-4) and result["fid"] > 0.01


def test_inception_offline_says_where_the_weights_go(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "inception_weights_path", lambda: str(tmp_path / "missing.pt"))
    fid.save_images(make_images(2), str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt .* at .*missing.pt"):
        fid.folder_features(str(tmp_path / "a"), feature_extractor="inception")
    with pytest.raises(ValueError, match="needs a trained SPMClassifier"):
        fid.folder_features(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="feature_extractor must be one of"):
        fid.folder_features(str(tmp_path / "a"), feature_extractor="clip")


def test_fid_terms_split_a_shift_from_a_change_of_spread():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    a -= a.mean(axis=0)
    shifted = fid.fid_terms(a + np.array([1.0, 0.0, 0.0]), a)
    assert shifted["mean"] == pytest.approx(1.0) and abs(shifted["covariance"]) < 1e-6
    spread = fid.fid_terms(2 * a, a)
    assert spread["mean"] == pytest.approx(0.0, abs=1e-9) and spread["covariance"] == pytest.approx(3.0, rel=0.05)
    assert spread["fid"] == pytest.approx(spread["mean"] + spread["covariance"])

"""FID and KID through clean-fid (Parmar et al. 2022), on folders of image files.

`feature_extractor="inception"` is standard FID with clean-fid's Inception weights, used only when the
weights file is already on disk (nothing is downloaded). `feature_extractor="domain"` embeds images with a
trained `SPMClassifier`'s encoder, passed to clean-fid as its custom feature extractor at the images'
native resolution: the offline default. Every result records the extractor, clean-fid mode, image counts
and seed.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid import fid as cleanfid
from PIL import Image

from ..choices import FeatureExtractor, check_choice
from ..models.classifier_spm import SPMClassifier

INCEPTION_FILE = "inception-2015-12-05.pt"


def inception_weights_path() -> str:
    """Where clean-fid looks for its Inception weights (it would download them there)."""
    return os.path.join("./" if platform.system() == "Windows" else "/tmp", INCEPTION_FILE)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets `(N, D)` (clean-fid's computation)."""
    return float(cleanfid.fid_from_feats(features_a, features_b))


def fid_terms(features_a: np.ndarray, features_b: np.ndarray) -> dict[str, float]:
    """FID split into its two terms: `mean` = ||mu_a - mu_b||^2 (where the sets sit) and `covariance` =
    Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (how they spread); their sum is the FID."""
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    total = fid_from_features(features_a, features_b)
    mean = float(np.sum((mu_a - mu_b) ** 2))
    return {"fid": total, "mean": mean, "covariance": total - mean}


def kid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return float(cleanfid.kernel_distance(features_a, features_b))


def save_png(image: torch.Tensor, path: str) -> str:
    """Writes one float image `(C, H, W)` in [0, 1] as an 8-bit PNG (grayscale for one channel)."""
    array = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)
    return path


def save_images(images: torch.Tensor, folder: str, prefix: str = "img") -> str:
    """Writes float images `(N, C, H, W)` in [0, 1] as PNG files (clean-fid reads folders)."""
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        save_png(image, os.path.join(folder, f"{prefix}{i:06d}.png"))
    return folder


@torch.no_grad()
def domain_features(classifier: SPMClassifier, images: torch.Tensor) -> torch.Tensor:
    """The classifier's embeddings of images `(N, C, H, W)` in [0, 1] of any size (resized to its own, as the
    FID features of smaller images are)."""
    size = classifier.config.image_size
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return classifier.embed(images.to(classifier.device))


def domain_extractor(classifier: SPMClassifier):
    """clean-fid custom feature extractor: batches `(N, 3, H, W)` in [0, 255] -> classifier embeddings."""
    classifier = classifier.eval()

    def extract(batch: torch.Tensor) -> torch.Tensor:
        x = batch.float() / 255  # clean-fid hands float batches in [0, 255]
        if classifier.config.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        return domain_features(classifier, x)

    return extract


def folder_features(
    folder: str,
    feature_extractor: FeatureExtractor = "domain",
    classifier: SPMClassifier | None = None,
    mode: str = "clean",
    batch_size: int = 128,
    device: torch.device | None = None,
) -> np.ndarray:
    """Features `(N, D)` of every image file in `folder` (see module docstring for the extractors)."""
    check_choice("feature_extractor", feature_extractor, FeatureExtractor)
    device = device or torch.device("cpu")
    if feature_extractor == "domain":
        if classifier is None:
            raise ValueError('feature_extractor="domain" needs a trained SPMClassifier (classifier=)')
        return cleanfid.get_folder_features(
            folder,
            model=domain_extractor(classifier),
            num_workers=0,
            batch_size=batch_size,
            device=device,
            mode=mode,
            custom_fn_resize=lambda x: x,
            verbose=False,
        )
    if not os.path.isfile(inception_weights_path()):
        raise FileNotFoundError(
            f"standard FID needs clean-fid's Inception weights, and nothing is downloaded at run time: place "
            f"{INCEPTION_FILE} (the StyleGAN2-ADA metrics network that clean-fid uses) at {inception_weights_path()}, "
            'or use feature_extractor="domain"'
        )
    model = cleanfid.build_feature_extractor(mode, device, use_dataparallel=False)
    return cleanfid.get_folder_features(
        folder, model=model, num_workers=0, batch_size=batch_size, device=device, mode=mode, verbose=False
    )


def compute_fid(
    samples_dir: str,
    reference_dir: str,
    feature_extractor: FeatureExtractor = "domain",
    classifier: SPMClassifier | None = None,
    mode: str = "clean",
    seed: int = 0,
    batch_size: int = 128,
) -> dict:
    """FID and KID between the images of two folders, with the settings that produced them.

    For FID_O, `reference_dir` holds samples of the oracle retrained without the removed data.
    """
    a = folder_features(samples_dir, feature_extractor, classifier, mode, batch_size)
    b = folder_features(reference_dir, feature_extractor, classifier, mode, batch_size)
    return {
        "fid": fid_from_features(a, b),
        "kid": kid_from_features(a, b),
        "feature_extractor": feature_extractor,
        "clean_fid_mode": mode,
        "num_images": [len(a), len(b)],
        "seed": seed,
    }

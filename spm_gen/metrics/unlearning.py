"""Classification unlearning metrics: UA, RA, TA, MIA and the prediction gap to an oracle.

- UA / RA / TA: accuracy (%) on the forget set, the remaining training set and the test set.
- MIA: a membership-inference attack (logistic regression, scikit-learn) trained on the confidence
  features of remaining-training items (members) against test items (non-members), applied to the forget
  set; the value is the % of forget items it calls members (lower: the model treats them as unseen).
- Prediction gap to the oracle retrained without the forget set: hard = % of test predictions that
  disagree; soft = mean total-variation distance between the two predictive distributions (%).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..data import ImageDataset
from ..memory.bank import MemoryBank
from ..models.classifier_spm import SPMClassifier
from ..utils.images import to_unit_range


def probabilities(model: SPMClassifier, bank: MemoryBank | None, dataset: ImageDataset) -> torch.Tensor:
    return model.predict(to_unit_range(dataset.images), bank).cpu()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (probs.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")


def _mia_features(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    p_true = probs[torch.arange(len(labels)), labels].clamp(1e-12, 1)
    entropy = -(probs * probs.clamp(1e-12, 1).log()).sum(1)
    return torch.stack([p_true.log(), entropy, probs.max(1).values], dim=1).numpy()


def membership_inference(
    remain_probs: torch.Tensor,
    remain_labels: torch.Tensor,
    test_probs: torch.Tensor,
    test_labels: torch.Tensor,
    forget_probs: torch.Tensor,
    forget_labels: torch.Tensor,
    seed: int = 0,
) -> float:
    """% of forget items that an attack trained on remaining (members) vs test (non-members) calls members."""
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(remain_labels), size=min(len(remain_labels), len(test_labels)), replace=False)
    x = np.concatenate([_mia_features(remain_probs[keep], remain_labels[keep]), _mia_features(test_probs, test_labels)])
    y = np.concatenate([np.ones(len(keep)), np.zeros(len(test_labels))])
    attack = LogisticRegression(max_iter=1000).fit(x, y)
    return 100.0 * float(attack.predict(_mia_features(forget_probs, forget_labels)).mean())


def unlearning_metrics(
    model: SPMClassifier,
    bank: MemoryBank | None,
    forget: ImageDataset,
    remain: ImageDataset,
    test: ImageDataset,
    oracle_test_probs: torch.Tensor | None = None,
) -> dict[str, float]:
    """UA, RA, TA, MIA (%), and PG hard / soft (%) when the oracle's test probabilities are given."""
    forget_p, remain_p, test_p = (probabilities(model, bank, d) for d in (forget, remain, test))
    result = {
        "UA": accuracy(forget_p, forget.labels),
        "RA": accuracy(remain_p, remain.labels),
        "TA": accuracy(test_p, test.labels),
        "MIA": membership_inference(remain_p, remain.labels, test_p, test.labels, forget_p, forget.labels),
    }
    if oracle_test_probs is not None:
        result["PG_hard"] = 100.0 * (test_p.argmax(1) != oracle_test_probs.argmax(1)).float().mean().item()
        result["PG_soft"] = 100.0 * 0.5 * (test_p - oracle_test_probs).abs().sum(1).mean().item()
    return result


def generation_unlearning_accuracy(
    judge: SPMClassifier, judge_bank: MemoryBank | None, images: torch.Tensor, forgotten_class: int
) -> float:
    """UA of generation (the paper): 100 x (1 - the judge's accuracy on generations of the forgotten class)."""
    if len(images) == 0:
        raise ValueError("no generated images to judge")
    predicted = judge.predict(images, judge_bank).argmax(1)
    return 100.0 * (1.0 - (predicted == forgotten_class).float().mean().item())

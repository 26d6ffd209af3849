"""Classification unlearning metrics, on the paper's definitions (and the official code's):

- UA = 100 - accuracy (%) on the forget set (classification) or on generations of the forgotten class
  (generation): higher means more forgotten. RA: accuracy on the remaining training set.
- TA: test accuracy; for class forgetting on the remaining classes' test items (`TA_all`: the whole test set).
- MIA-efficacy (SalUn, Fan et al. 2024): an SVM (RBF, C=3) trained on the true-label confidence of
  remaining-training items (members) against test items (non-members), applied to the forget set; the value
  is the % of forget items it calls non-members (higher: the model treats them as unseen).
- Prediction gap to the oracle retrained without the forget set, on the test set: `PG_hard` = % of
  predictions that disagree; `PG_soft` = KL(p_oracle || p_model) in nats, averaged over test items (as the
  official code's `kl_div(log p_model, p_oracle, batchmean)`); `PG_soft_TV` = 100 x the mean total-variation
  distance (our earlier PG soft).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.svm import SVC

from ..data import ImageDataset
from ..memory.bank import MemoryBank
from ..models.classifier_spm import SPMClassifier
from ..utils.images import to_unit_range


def probabilities(model: SPMClassifier, bank: MemoryBank | None, dataset: ImageDataset) -> torch.Tensor:
    return model.predict(to_unit_range(dataset.images), bank).cpu()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (probs.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")


def mia_efficacy(
    remain_probs: torch.Tensor,
    remain_labels: torch.Tensor,
    test_probs: torch.Tensor,
    test_labels: torch.Tensor,
    forget_probs: torch.Tensor,
    forget_labels: torch.Tensor,
    seed: int = 0,
) -> float:
    """SalUn's MIA-efficacy (%): forget items that a confidence attack trained on remaining (members) vs test
    (non-members) items calls non-members. Members are subsampled to the number of test items."""

    def confidence(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return probs[torch.arange(len(labels)), labels][:, None].double().numpy()

    rng = np.random.default_rng(seed)
    keep = rng.choice(len(remain_labels), size=min(len(remain_labels), len(test_labels)), replace=False)
    x = np.concatenate([confidence(remain_probs[keep], remain_labels[keep]), confidence(test_probs, test_labels)])
    y = np.concatenate([np.ones(len(keep)), np.zeros(len(test_labels))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return 100.0 * float(1 - attack.predict(confidence(forget_probs, forget_labels)).mean())


def kl_gap(oracle_probs: torch.Tensor, probs: torch.Tensor) -> float:
    """KL(p_oracle || p_model) in nats, averaged over items (inf where the model gives 0 to an oracle class)."""
    kl = torch.special.xlogy(oracle_probs, oracle_probs) - torch.special.xlogy(oracle_probs, probs)
    return kl.double().sum(1).mean().item()


def unlearning_metrics(
    model: SPMClassifier,
    bank: MemoryBank | None,
    splits: tuple[ImageDataset, ImageDataset, ImageDataset],
    forgotten_classes: Sequence[int] = (),
    oracle_test_probs: torch.Tensor | None = None,
) -> dict[str, float]:
    """UA, RA, TA, TA_all, MIA-efficacy (%) of `model` on `splits` = (forget, remain, test), and PG_hard (%),
    PG_soft (nats), PG_soft_TV (%) when the oracle's test probabilities are given. With `forgotten_classes`
    (class forgetting), TA covers the test items of the other classes."""
    forget, remain, test = splits
    forget_p, remain_p, test_p = (probabilities(model, bank, d) for d in splits)
    kept = ~torch.isin(test.labels, torch.tensor(list(forgotten_classes), dtype=torch.long))
    result = {
        "UA": 100.0 - accuracy(forget_p, forget.labels),
        "RA": accuracy(remain_p, remain.labels),
        "TA": accuracy(test_p[kept], test.labels[kept]),
        "TA_all": accuracy(test_p, test.labels),
        "MIA_efficacy": mia_efficacy(remain_p, remain.labels, test_p, test.labels, forget_p, forget.labels),
    }
    if oracle_test_probs is not None:
        result["PG_hard"] = 100.0 * (test_p.argmax(1) != oracle_test_probs.argmax(1)).float().mean().item()
        result["PG_soft"] = kl_gap(oracle_test_probs, test_p)
        result["PG_soft_TV"] = 100.0 * 0.5 * (test_p - oracle_test_probs).abs().sum(1).mean().item()
    return result


def generation_unlearning_accuracy(
    judge: SPMClassifier, judge_bank: MemoryBank | None, images: torch.Tensor, forgotten_class: int
) -> float:
    """UA of generation (the paper): 100 x (1 - the judge's accuracy on generations of the forgotten class)."""
    if len(images) == 0:
        raise ValueError("no generated images to judge")
    predicted = judge.predict(images, judge_bank).argmax(1)
    return 100.0 * (1.0 - (predicted == forgotten_class).float().mean().item())

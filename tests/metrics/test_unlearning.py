import math

import pytest
import torch

from spm_gen import SPMClassifier
from spm_gen.metrics.unlearning import generation_unlearning_accuracy, kl_gap, mia_efficacy


def test_generation_ua():
    judge = SPMClassifier(
        image_size=8, stage_channels=(8,), blocks_per_stage=(1,), embed_dim=6, num_classes=3, head="linear"
    )
    with torch.no_grad():
        judge.linear.weight.zero_()
        judge.linear.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # always predicts class 1
    images = torch.rand(4, 1, 8, 8)
    assert generation_unlearning_accuracy(judge, None, images, forgotten_class=1) == 0.0
    assert generation_unlearning_accuracy(judge, None, images, forgotten_class=2) == 100.0


def test_membership_inference_separates_confident_members():
    members = torch.tensor([[0.99, 0.01]] * 50)
    non_members = torch.tensor([[0.6, 0.4]] * 50)
    labels = torch.zeros(50, dtype=torch.long)
    # MIA-efficacy: the share of forget items the attack calls non-members (higher: better forgotten)
    assert mia_efficacy(members, labels, non_members, labels, members[:10], labels[:10]) == 0.0
    assert mia_efficacy(members, labels, non_members, labels, non_members[:10], labels[:10]) == 100.0


def test_kl_gap_is_kl_of_the_oracle_from_the_model_in_nats():
    oracle = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    model = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]])
    want = (0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75) + math.log(2)) / 2
    assert kl_gap(oracle, model) == pytest.approx(want) and kl_gap(oracle, oracle) == 0.0
    assert kl_gap(model, oracle) == math.inf  # the oracle gives class 1 no mass where the model does

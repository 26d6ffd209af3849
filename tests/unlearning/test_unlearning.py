import math

import pytest
import torch

from spm_gen.data import load_digits_dataset
from spm_gen.metrics.unlearning import unlearning_metrics
from spm_gen.models.classifier_spm import load_classifier
from spm_gen.training import ClassifierTrainConfig, load_config
from spm_gen.training.classifier_loop import train_classifier
from spm_gen.unlearning.baselines import finetune, gradient_ascent
from spm_gen.unlearning.forget_set import ForgetSet, forget_ids
from spm_gen.utils.images import to_unit_range

OVERRIDES = {
    "image_size": 8,
    "model.image_size": 8,
    "stage_channels": [8, 16],
    "blocks_per_stage": [1, 1],
    "embed_dim": 16,
    "max_train_steps": 100,
    "memory_per_batch": 30,
}


def _train(tmp_path, **extra):
    overrides = {"output_dir": str(tmp_path), **OVERRIDES, **extra}
    config = load_config("configs/digits_classifier.yaml", overrides, config_class=ClassifierTrainConfig)
    return load_classifier(train_classifier(config))


def test_forget_requests():
    ds = load_digits_dataset(split="train")
    ids = forget_ids(ds, ForgetSet(forget_class=3))
    assert len(ids) == int((ds.labels == 3).sum())
    random = forget_ids(ds, ForgetSet(fraction=0.1, seed=1))
    assert len(random) == round(0.1 * len(ds)) and random == forget_ids(ds, ForgetSet(fraction=0.1, seed=1))
    with pytest.raises(ValueError, match="exactly one"):
        ForgetSet()
    with pytest.raises(ValueError, match="class 42"):
        forget_ids(ds, ForgetSet(forget_class=42))


@pytest.mark.slow
def test_classifier_training_and_spm_deletion(tmp_path):
    model, bank = _train(tmp_path)
    test = load_digits_dataset(image_size=8, split="test")
    train = load_digits_dataset(image_size=8, split="train")
    assert sorted(bank.ids) == sorted(train.ids)
    before = model.predict(to_unit_range(test.images), bank)
    assert (before.argmax(1) == test.labels).float().mean() > 0.3  # learned something in 30 steps
    ids = forget_ids(train, ForgetSet(forget_class=3))
    bank.remove(ids=ids)
    mask = torch.tensor([i in set(ids) for i in train.ids])
    splits = (train.subset(mask), train.subset(~mask), test)
    metrics = unlearning_metrics(model, bank, splits, forgotten_classes=[3], oracle_test_probs=before)
    assert metrics["UA"] == 100.0  # class 3 can no longer be predicted
    after = model.predict(to_unit_range(test.images), bank)
    others = test.labels != 3
    assert metrics["TA"] == pytest.approx(100 * (after[others].argmax(1) == test.labels[others]).float().mean().item())
    # the model before deletion still gives class 3 mass, the model after exactly none: KL(before || after) = inf
    assert metrics["PG_soft"] == math.inf and 0 < metrics["PG_hard"] < 100 and 0 < metrics["PG_soft_TV"] < 100


@pytest.mark.slow
def test_parametric_baselines_change_the_model(tmp_path):
    model, bank = _train(tmp_path, head="linear")
    assert bank is None
    train = load_digits_dataset(image_size=8, split="train")
    forget = train.subset(train.labels == 3)
    x = forget.images.float() / 255
    ascended, _ = gradient_ascent(model, forget, steps=5, lr=0.01)
    loss = torch.nn.functional.cross_entropy
    assert loss(ascended(x), forget.labels) > loss(model(x), forget.labels)
    tuned, _ = finetune(model, train.subset(train.labels != 3), steps=3)
    assert not torch.equal(tuned(x), model(x))
    with pytest.raises(ValueError, match="head='linear'"):
        finetune(_train(tmp_path / "spm")[0], forget, steps=1)


def test_diffusion_gradient_ascent_raises_the_forget_loss():
    from diffusers import DDPMScheduler

    from spm_gen.training.config import build_unet
    from spm_gen.training.losses import diffusion_loss
    from spm_gen.training.run import TrainingBatch
    from spm_gen.unlearning.diffusion_baselines import UnlearningBudget, diffusion_gradient_ascent

    torch.manual_seed(0)
    twin = build_unet("configs/tiny.yaml", fusion_type="none")
    scheduler = DDPMScheduler(num_train_timesteps=100)
    data = load_digits_dataset(image_size=8, split="train")
    forget = data.subset(data.labels == 3)

    def forget_loss(model):
        batch = TrainingBatch(forget.images[:64], forget.labels[:64])
        with torch.no_grad():
            return diffusion_loss(model.eval(), scheduler, batch, torch.Generator().manual_seed(5)).item()

    unlearned, _ = diffusion_gradient_ascent(
        twin, scheduler, forget, UnlearningBudget(steps=5, lr=1e-3, remain=data.subset(data.labels != 3))
    )
    assert forget_loss(unlearned) > forget_loss(twin)
    with pytest.raises(ValueError, match="parametric twin"):
        diffusion_gradient_ascent(build_unet("configs/tiny.yaml"), scheduler, forget, UnlearningBudget(1, 1e-5))


def test_diffusion_random_label_moves_only_salient_weights_towards_other_labels():
    from diffusers import DDPMScheduler

    from spm_gen.training.config import build_unet
    from spm_gen.unlearning.diffusion_baselines import UnlearningBudget, diffusion_random_label
    from spm_gen.utils.images import to_model_range

    torch.manual_seed(0)
    twin = build_unet("configs/tiny.yaml", fusion_type="none").eval()
    with torch.no_grad():  # make label 3 behave very differently from the others
        twin.class_embedding.weight[3].mul_(50)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    data = load_digits_dataset(image_size=8, split="train")
    forget = data.subset(data.labels == 3)
    images = to_model_range(forget.images[:32])
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 100, (32,), generator=g)
    noisy = scheduler.add_noise(images, torch.randn(images.shape, generator=g), t)
    with torch.no_grad():  # the mean prediction under the other labels: what label 3 should now behave like
        others = torch.stack([twin(noisy, t, torch.full((32,), c)).sample for c in range(10) if c != 3]).mean(0)

    def gap(model):
        with torch.no_grad():
            return (model(noisy, t, torch.full((32,), 3)).sample - others).pow(2).mean().item()

    unlearned, _ = diffusion_random_label(twin, scheduler, forget, UnlearningBudget(30, 1e-3, saliency=0.2))
    assert gap(unlearned) < 0.5 * gap(twin)
    changed = sum(int((a != b).sum()) for a, b in zip(unlearned.parameters(), twin.parameters()))
    total = sum(p.numel() for p in twin.parameters())
    assert 0 < changed <= 0.2 * total + 10  # only the salient fifth of the weights moved
    with pytest.raises(ValueError, match="saliency"):
        diffusion_random_label(twin, scheduler, forget, UnlearningBudget(1, 1e-4, saliency=1.5))


def test_diffusion_unlearning_with_dropout_repeats_for_a_seed():
    """Dropout's masks come from torch's global generator: the budget's seed fixes them too, so the same seed
    gives the same weights (the global generator's state is left as it was), and another seed other weights."""
    from diffusers import DDPMScheduler

    from spm_gen.training.config import build_unet
    from spm_gen.unlearning.diffusion_baselines import UnlearningBudget, diffusion_gradient_ascent

    torch.manual_seed(0)
    twin = build_unet("configs/tiny.yaml", fusion_type="none", dropout=0.5)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    data = load_digits_dataset(image_size=8, split="train")
    forget = data.subset(data.labels == 3)

    def weights(seed: int) -> torch.Tensor:
        unet, _ = diffusion_gradient_ascent(twin, scheduler, forget, UnlearningBudget(steps=2, lr=1e-3, seed=seed))
        return torch.cat([p.detach().flatten() for p in unet.parameters()])

    state = torch.get_rng_state()
    first = weights(0)
    torch.rand(7)  # the global generator moves between the runs
    assert torch.equal(weights(0), first)
    assert not torch.equal(weights(1), first)
    torch.set_rng_state(state)
    weights(0)
    assert torch.equal(torch.get_rng_state(), state)

import torch

from spm_gen import MemoryBank
from spm_gen.metrics.memorization import memorization, near_copies
from spm_gen.utils.charts import save_distance_histogram
from tests.conftest import make_images


def test_copies_are_memorized_and_fresh_images_are_not():
    train = make_images(60, seed=1)
    bank = MemoryBank.from_images(train, torch.arange(60) % 3)
    copies = (train[:5] + 0.002).clamp(0, 1)  # near copies of training images
    fresh = make_images(5, seed=99)
    report = memorization(torch.cat([copies, fresh]), bank)
    assert report.memorized.tolist() == [True] * 5 + [False] * 5
    assert report.nearest_ids[:5] == ["0", "1", "2", "3", "4"]
    assert (report.extraction_ratio[:5] < 0.1).all() and (report.extraction_ratio[5:] > 0.5).all()
    assert report.memorization_rate == 0.5
    # the documented scale: RMS pixel difference, of samples quantised to 8 bits like saved images
    quantised = (copies[0] * 255).round() / 255
    want = (quantised - train[0]).square().mean().sqrt()
    torch.testing.assert_close(report.nearest_distance[0], want, atol=1e-5, rtol=1e-4)


def test_near_copies_and_histogram(tmp_path):
    targets = make_images(3, seed=2)
    samples = torch.cat([targets[[0, 0, 2]], make_images(4, seed=7)])
    assert near_copies(samples, targets, threshold=0.01).tolist() == [2, 0, 1]
    path = save_distance_histogram({"before": torch.rand(20), "after": torch.rand(20)}, str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 1000 and path.endswith("h.png")


def test_the_report_counts_near_copies_and_distinct_images_by_one_rule():
    from spm_gen.memory.bank import MemoryBank
    from spm_gen.metrics.memorization import EXTRACTION_RATIO, memorization, nearest_target_distance

    g = torch.Generator().manual_seed(0)
    training = torch.rand(6, 1, 4, 4, generator=g)
    bank = MemoryBank.from_images((training * 255).round().to(torch.uint8), torch.zeros(6, dtype=torch.long))
    stored = bank.get_images().cpu()
    samples = torch.cat([stored[:1], stored[:1], stored[2:3], torch.rand(2, 1, 4, 4, generator=g)])
    report = memorization(samples, bank)
    assert report.near_copy_samples(1e-6) == 3 and report.near_copied_images(1e-6) == 2  # two copies of one image
    assert report.extraction_share == float((report.extraction_ratio < EXTRACTION_RATIO).float().mean())
    assert torch.equal(nearest_target_distance(stored[:1], samples)[:2], torch.zeros(2))

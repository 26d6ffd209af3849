import numpy as np
import pytest
import torch
from PIL import Image

from spm_gen.utils.images import from_model_range, load_image, to_model_range


def test_model_range_round_trip():
    u8 = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    model = to_model_range(u8)
    assert model.dtype == torch.float32 and model.min() == -1 and model.max() == 1
    torch.testing.assert_close(to_model_range(u8.float() / 255), model)  # uint8 and [0, 1] floats agree
    torch.testing.assert_close(from_model_range(model), u8.float() / 255)
    assert from_model_range(torch.tensor([3.0])).item() == 1.0  # clamped
    assert from_model_range(torch.tensor([3.0]), clamp=False).item() == 2.0


def test_load_image(tmp_path):
    array = (np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    image = load_image(str(tmp_path / "a.png"))
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(array).permute(2, 0, 1))
    assert load_image(str(tmp_path / "a.png"), image_size=2, channels=1).shape == (1, 2, 2)
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(str(tmp_path / "b.png"))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_image(str(tmp_path / "a.png"), channels=2)

import pytest
import torch

from spm_gen import MemoryBank, PixelEncoder, TransformersImageEncoder


def test_pixel_encoder_downsamples_and_normalises(rgb_images):
    emb = PixelEncoder(size=4)(rgb_images)
    assert emb.shape == (6, 3 * 4 * 4)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))
    assert PixelEncoder(size=None)(rgb_images).shape == (6, 3 * 16 * 16)
    with pytest.raises(ValueError, match="size must be positive"):
        PixelEncoder(size=0)


def _tiny_clip(path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=8,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(path)


def _tiny_dinov2(path):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    Dinov2Model(config).save_pretrained(path)


@pytest.mark.parametrize("make, dim", [(_tiny_clip, 8), (_tiny_dinov2, 16)])
def test_transformers_encoder_loads_a_local_model(tmp_path, rgb_images, make, dim):
    make(tmp_path)
    encoder = TransformersImageEncoder(tmp_path)
    emb = encoder(rgb_images)
    assert emb.shape == (6, dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(encoder(rgb_images[:2]), emb[:2], atol=1e-5, rtol=1e-5)
    assert encoder(rgb_images[:, :1]).shape == (6, dim)  # grayscale input is broadcast to RGB
    assert encoder.describe()["path"] == str(tmp_path)
    # as the bank's embedding space
    bank = MemoryBank.from_images(rgb_images, [0, 1, 2, 0, 1, 2])
    bank.compute_embeddings(encoder)
    assert bank.nearest(encoder(rgb_images[[4]]), k=1).ids == [["4"]]


def test_transformers_encoder_missing_path_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="No transformers model at .*nothing.*huggingface-cli download"):
        TransformersImageEncoder(tmp_path / "nothing")

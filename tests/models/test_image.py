"""The image generator: shapes, the data range, standardisation, the per-block energy score it
trains with, save/load, and errors."""

from __future__ import annotations

import pytest
import torch

from energyflow import functional
from energyflow.models import ImageGenerator, build_model, load_model
from energyflow.models.image import RANGE_MARGIN, default_patch
from energyflow.training.config import TrainConfig, check_setup, default_estimator, with_recipe
from energyflow.training.fit import fit
from energyflow.training.objective import Objective
from energyflow.training.recipe import recommended_image_options


def _images(n=60, shape=(2, 4, 6)):
    return torch.rand(n, *shape) * (1.0 + 3.0 * torch.arange(shape[0])).view(1, -1, 1, 1)


def test_samples_are_images_within_each_channels_range():
    data = _images().flatten(1)
    model = ImageGenerator(48, (2, 4, 6), patch=2, hidden_channels=8)
    assert model.grid == (2, 3) and model.blocks == 6 and model.noise_features == 16 * 6
    model.fit_standardisation(data)
    samples = model.sample((500,)).reshape(500, 2, 4, 6)
    for channel in (0, 1):  # continuous pixels: the exact range
        values, pixels = samples[:, channel], data.reshape(-1, 2, 24)[:, channel]
        assert values.min() >= pixels.min() - 1e-5 and values.max() <= pixels.max() + 1e-5
    # per-channel standardisation: one loc and scale per channel
    assert model.loc.view(2, 24).std(1).max() == 0
    torch.testing.assert_close(model.loc.view(2, 24)[:, 0], data.view(-1, 2, 24).mean((0, 2)))


def test_bounds_move_out_where_pixels_sit_on_the_extremes():
    """A background of exact zeros (channel 0's minimum) moves that bound out by the margin;
    continuous extremes (channel 0's maximum, channel 1) stay exact."""
    data = _images(50)
    data[:, 0, :2] = 0.0
    model = ImageGenerator(48, (2, 4, 6), patch=2, hidden_channels=8)
    model.fit_standardisation(data.flatten(1))
    pixels = data.transpose(0, 1).reshape(2, -1)
    width = pixels.amax(1) - pixels.amin(1)
    scale, loc = model.scale[::24], model.loc[::24]
    want_low = (pixels.amin(1) - torch.tensor([RANGE_MARGIN, 0.0]) * width - loc) / scale
    torch.testing.assert_close(model.low, want_low)
    torch.testing.assert_close(model.high, (pixels.amax(1) - loc) / scale)


def test_block_samples_and_the_block_score_objective():
    torch.manual_seed(0)
    model = ImageGenerator(48, (2, 4, 6), patch=2, hidden_channels=8, context_features=3)
    data, context = _images(8).flatten(1), torch.eye(3)[torch.arange(8) % 3]
    model.fit_standardisation(data, context)
    noise = torch.randn(8, 2, model.noise_features)
    x = model.standardise(data)
    samples, blocks = model.rsample_blocks_standardised(
        x, model.standardise_context(context), noise
    )
    assert samples.shape == (8, 6, 2, 8) and blocks.shape == (8, 6, 8)
    # blocks in raster order: block 4 is grid cell (1, 1), pixels rows 2-3, cols 2-3
    image = data[3].view(2, 4, 6)
    want = (image[:, 2:4, 2:4] - model.loc.view(2, 4, 6)[:, 2:4, 2:4]) / model.scale.view(2, 4, 6)[
        :, 2:4, 2:4
    ]
    torch.testing.assert_close(blocks[3, 4], want.reshape(8))
    config = TrainConfig(estimator="block_score", beta=0.5)
    loss = Objective(model, config)(data, context, noise)
    # the sum over blocks of each block's energy score, the mean over images
    manual = sum(functional.energy_score(samples[:, k], blocks[:, k], beta=0.5) for k in range(6))
    torch.testing.assert_close(loss, manual)
    assert Objective(model, config).noise_shape(8, True) == (8, 2, model.noise_features)


def test_fit_uses_the_block_score_and_save_load_round_trip(tmp_path):
    data = _images(80, (1, 4, 4)).flatten(1)
    model = build_model("image", 16, image_shape=(1, 4, 4), hidden_channels=8, patch=2)
    assert default_estimator(False, model) == "block_score"
    state = fit(model, data, steps=5, batch_size=16, progress=False)
    assert state.step == 5 and all(torch.isfinite(torch.tensor(h["loss"])) for h in state.history)
    model.save(tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    torch.manual_seed(1)
    first = model.sample((7,))
    torch.manual_seed(1)
    torch.testing.assert_close(again.sample((7,)), first)


def test_mixed_precision_trains_the_image_model_as_fp32_does():
    """``precision="bf16"`` autocasts the convolutions (they refused a bf16 input beside an fp32
    weight before); the weights, the loss and the samples stay fp32, and the loss ends where
    fp32 training's does."""
    data = _images(200, (1, 4, 4)).flatten(1)
    final = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("image", 16, image_shape=(1, 4, 4), hidden_channels=16, patch=2)
        state = fit(model, data, steps=60, batch_size=32, precision=precision, progress=False)
        losses = torch.tensor([h["loss"] for h in state.history])
        assert torch.isfinite(losses).all()
        final[precision] = float(losses[-10:].mean())
        assert losses[-10:].mean() < 0.95 * losses[:10].mean()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert model.sample((5,)).dtype == torch.float32
    assert abs(final["bf16"] - final["fp32"]) < 0.05 * final["fp32"]


def test_the_recipe_sizes_the_image_model_and_its_batch():
    assert recommended_image_options((1, 8, 8)) == {
        "patch": 2,
        "hidden_features": (128,) * 4,
        "noise_channels": 8,
    }
    assert recommended_image_options((3, 28, 28))["hidden_features"] == (128,) * 6  # 7 x 7 grid
    assert with_recipe(TrainConfig(), 1000, 64, images=True).batch_size == 128
    assert with_recipe(TrainConfig(), 1000, 64).batch_size == 512
    assert with_recipe(TrainConfig(), 90, 64, images=True).batch_size == 90  # at most the rows
    assert with_recipe(TrainConfig(batch_size=32), 1000, 64, images=True).batch_size == 32


def test_rsample_is_differentiable_through_the_cached_steps():
    model = ImageGenerator(16, (1, 4, 4), patch=2, hidden_channels=8)
    samples = model.rsample((5,))
    samples.square().sum().backward()
    grads = [p.grad for p in model.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_default_patch_and_errors():
    assert (default_patch(28, 28), default_patch(8, 8), default_patch(30, 20)) == (4, 2, 2)
    assert default_patch(7, 7) == 1
    with pytest.raises(ValueError, match="patch 3 must divide"):
        ImageGenerator(64, (1, 8, 8), patch=3)
    with pytest.raises(ValueError, match="features"):
        ImageGenerator(60, (1, 8, 8))
    with pytest.raises(ValueError, match="image_shape"):
        ImageGenerator(64, (8, 8))
    from energyflow.models import SemiAutoregressiveGenerator

    flat = SemiAutoregressiveGenerator(4, 1, hidden_features=(8,))
    with pytest.raises(ValueError, match="block_score"):
        check_setup(flat, TrainConfig(estimator="block_score"), torch.randn(20, 4), None)

"""The data standardisations: moments, and the Gaussianising quantile map (models.quantiles)."""

from __future__ import annotations

import math

import pytest
import torch

from energyflow.models import BlockAffineFlow, SemiAutoregressiveGenerator, load_model
from energyflow.models.quantiles import fit_knots
from energyflow.training import fit
from energyflow.training.recipe import recommended_settings
from helpers import assert_close_scaled


def _dequantised_table(rows: int = 600, seed: int = 0) -> torch.Tensor:
    """Features like dequantised pixels: integer levels plus uniform noise, one constant column,
    one heavy-tailed one."""
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 17, (rows, 3), generator=generator).double()
    pixels = (levels + torch.rand(rows, 3, generator=generator, dtype=torch.float64)) / 17
    constant = torch.full((rows, 1), 2.5, dtype=torch.float64)
    heavy = torch.distributions.StudentT(2.0).sample((rows, 1)).double()
    return torch.cat([pixels, constant, heavy], 1)


def _quantile_model(data: torch.Tensor) -> SemiAutoregressiveGenerator:
    model = SemiAutoregressiveGenerator(data.shape[1], 1, hidden_features=(8,)).double()
    model.fit_standardisation(data, method="quantile")
    return model


def test_the_knots_are_strictly_increasing_even_for_tied_values():
    data = _dequantised_table()
    x_knots, z_knots = fit_knots(data, data.std(0))
    assert x_knots.shape == (5, 600) and z_knots.shape == (600,)
    assert (x_knots.diff(dim=1) > 0).all() and (z_knots.diff() > 0).all()
    assert abs(float(x_knots[3, -1]) - 2.5) < 1e-3  # the constant column spread by 1e-6 steps
    few = fit_knots(data, data.std(0), max_knots=64)[0]
    assert few.shape == (5, 64)


def test_the_map_is_a_bijection_with_its_log_derivative_inside_and_beyond_the_data():
    data = _dequantised_table()
    model = _quantile_model(data)
    assert model.standardisation == "quantile"
    low, high = data.min(0).values, data.max(0).values
    x = torch.cat([data[:50], low - 1.0 - torch.rand(5, 5), high + torch.rand(5, 5)])
    z = model.standardise(x)
    assert_close_scaled(model.unstandardise(z), x, 1e-9, "x -> z -> x")
    grid = torch.linspace(-6, 6, 41, dtype=torch.float64)[:, None].expand(-1, 5)
    back = model.standardise(model.unstandardise(grid))
    continuous = [0, 1, 2, 4]  # column 3 is constant: all of z maps to about 2.5
    assert_close_scaled(back[:, continuous], grid[:, continuous], 1e-9, "z -> x -> z")
    assert (model.unstandardise(grid)[:, 3] - 2.5).abs().max() < 1e-5  # tails: slope 1e-6
    for row in x[[0, 1, 52, 57]]:  # inside, and in both tails
        jacobian = torch.autograd.functional.jacobian(model.standardise, row[None])[0, :, 0]
        want = torch.diagonal(jacobian).log().sum()
        assert_close_scaled(model.standardise_log_det(row[None])[0], want, 1e-9, "log det")


def test_standardised_data_is_normal_and_samples_keep_the_data_range():
    data = _dequantised_table(rows=1000)
    model = _quantile_model(data)
    z = model.standardise(data)[:, [0, 1, 2, 4]]  # (column 3 is constant: one knot's value)
    assert z.mean(0).abs().max() < 0.02 and (z.std(0) - 1).abs().max() < 0.05
    inner = torch.linspace(-3.0, 3.0, 101, dtype=torch.float64)[:, None].expand(-1, 5)
    x = model.unstandardise(inner)  # outputs within the outer normal quantiles (+-3.1)
    low, high = data.min(0).values - 1e-9, data.max(0).values + 1e-9  # (ties spread 1e-12)
    assert ((x >= low) & (x <= high)).all()
    bins = torch.histc(model.unstandardise(torch.randn(20000, 5, dtype=torch.float64))[:, 0],
                       bins=17, min=0.0, max=1.0)  # fmt: skip
    assert bins.min() > 0.6 * bins.mean()  # uniform levels of the pixel come back uniform


def test_moments_is_the_default_and_unknown_methods_are_refused():
    data = _dequantised_table()
    model = SemiAutoregressiveGenerator(5, 1, hidden_features=(8,)).double()
    model.fit_standardisation(data)
    assert model.standardisation == "moments"
    want = (data - data.mean(0)) / data.std(0).clamp_min(1e-6)
    assert_close_scaled(model.standardise(data), want, 1e-9)
    with pytest.raises(ValueError, match="method must be one of"):
        model.fit_standardisation(data, method="rank")
    model.fit_standardisation(data, method="quantile")
    model.fit_standardisation(data)  # back to moments: the knots go
    assert model.standardisation == "moments" and model.quantile_z.numel() == 0


def test_a_flow_density_includes_the_maps_log_derivative(tmp_path):
    """log p(x) of a flow on quantile units = log N(u(x)) + log |det du/dx| of the whole map
    (standardisation then the flow), by autograd; and save / load keeps the knots."""
    torch.manual_seed(0)
    data = _dequantised_table()[:, [0, 4]]
    flow = BlockAffineFlow(2, blocks=2, transforms=2, hidden_features=(8,)).double()
    flow.fit_standardisation(data, method="quantile")
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0, 0.3)

    def to_noise(x):
        return flow._to_noise(flow.standardise(x), None)[0]

    for row in data[:3]:
        u = to_noise(row[None])[0]
        jacobian = torch.autograd.functional.jacobian(to_noise, row[None])[0, :, 0]
        want = -0.5 * (u.square() + math.log(2 * math.pi)).sum() + jacobian.det().abs().log()
        assert_close_scaled(flow.log_prob(row[None])[0], want, 1e-9, "log p")
    flow.float().save(tmp_path / "flow.pt")
    loaded = load_model(tmp_path / "flow.pt")
    assert loaded.standardisation == "quantile" and loaded.quantile_x.shape == (2, 600)
    rows = data[:20].float()
    assert torch.equal(loaded.log_prob(rows), flow.log_prob(rows))


def test_the_recipe_standardises_by_quantiles_above_eight_features():
    assert recommended_settings(1000, 64)["standardisation"] == "quantile"
    assert recommended_settings(1000, 2)["standardisation"] == "moments"
    assert recommended_settings(1000, 64, "mle")["standardisation"] == "moments"
    data = torch.rand(300, 9)
    model = SemiAutoregressiveGenerator(9, 1, hidden_features=(8,))
    fit(model, data, steps=2, batch_size=32)
    assert model.standardisation == "quantile"
    fit(model, data, steps=2, batch_size=32, standardisation="moments")
    assert model.standardisation == "moments"


def test_image_samples_stay_within_each_pixels_range_in_quantile_units():
    """The image model on quantile units: each pixel through its own quantiles, the outputs
    bounded by the outer normal quantiles, so every sample's pixels lie within that pixel's
    data range (a pixel that is always near 0 stays near 0)."""
    from energyflow.models import ImageGenerator

    torch.manual_seed(0)
    data = torch.rand(200, 16) * torch.linspace(0.05, 1.0, 16)  # per-pixel ranges differ
    model = ImageGenerator(16, (1, 4, 4), patch=2, hidden_channels=4, layers=1)
    fit(model, data, steps=3, batch_size=32, standardisation="quantile")
    assert model.standardisation == "quantile" and model.quantile_x.shape == (16, 180)  # 10% val
    assert_close_scaled(model.low, model.quantile_z[:1], 1e-6, "low")  # no atoms: exact bounds
    samples = model.sample((500,))
    assert (samples >= data.min(0).values - 1e-6).all()
    assert (samples <= data.max(0).values + 1e-6).all()
    fit(model, data, steps=1, batch_size=32, standardisation="moments")
    assert model.standardisation == "moments"

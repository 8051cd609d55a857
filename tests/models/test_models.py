"""Models: shapes, densities, sampling paths, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from energyflow.models import BlockAffineFlow, SemiAutoregressiveGenerator, load_model
from energyflow.models.base import SAMPLE_CHUNK_ROWS


def test_generator_shapes_and_no_density():
    model = SemiAutoregressiveGenerator(5, 2, hidden_features=(16,))
    assert model.rsample((7,)).shape == (7, 5)
    assert model.sample((2, 3)).shape == (2, 3, 5)
    assert model.rsample((4,)).requires_grad and not model.sample((4,)).requires_grad
    with pytest.raises(NotImplementedError, match="no tractable density"):
        model.log_prob(torch.randn(3, 5))
    conditional = SemiAutoregressiveGenerator(3, 3, context_features=2, hidden_features=(12,))
    assert conditional.sample((4,), torch.randn(6, 2)).shape == (4, 6, 3)
    with pytest.raises(ValueError, match="needs a context"):
        conditional.sample((4,))


@pytest.mark.parametrize("build", [SemiAutoregressiveGenerator, BlockAffineFlow])
def test_sampling_without_gradients_in_chunks_equals_one_pass(build):
    """Above SAMPLE_CHUNK_ROWS rows, sampling without gradients runs in chunks (a 3 x B lead
    shape with context, split mid-observation); the rows equal the one-pass rows with the same
    noise."""
    torch.manual_seed(0)
    model = build(3, 3, context_features=2, hidden_features=(12,)).double()
    model.fit_standardisation(torch.randn(50, 3, dtype=torch.float64) * 3 + 1, torch.randn(50, 2))
    context = torch.randn(SAMPLE_CHUNK_ROWS // 2 + 5, 2, dtype=torch.float64)
    noise = torch.randn(3, len(context), model.noise_features, dtype=torch.float64)
    with torch.no_grad():
        chunked = model.rsample_standardised((3,), context, noise=noise)
    one_pass = model.rsample_standardised((3,), context, noise=noise)  # with gradients: one pass
    assert chunked.shape == (3, len(context), 3)
    torch.testing.assert_close(chunked, one_pass.detach(), rtol=1e-12, atol=1e-12)


def test_generator_sampling_equals_full_forward_on_its_own_samples():
    """Cached K-step sampling is consistent: feeding a sample back through the full network
    with the same noise reproduces it."""
    torch.manual_seed(0)
    model = SemiAutoregressiveGenerator(6, 3, hidden_features=(18,)).double()
    z = torch.randn(5, model.noise_features, dtype=torch.float64)
    x = model._rsample_standardised(z, None)
    assert torch.allclose(model.net(x, z), x, atol=1e-12)


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_flow_log_prob_is_a_normalised_exact_density(blocks):
    torch.manual_seed(blocks)
    flow = BlockAffineFlow(4, blocks, transforms=2, hidden_features=(16,)).double()
    for p in flow.parameters():  # move away from the identity initialisation
        p.data += 0.1 * torch.randn_like(p)
    flow.loc.fill_(0.3)
    flow.scale.fill_(2.0)
    # change of variables against autograd's Jacobian determinant
    x = torch.randn(4, dtype=torch.float64)

    def to_noise(v):
        return flow._to_noise(flow.standardise(v)[None], None)[0][0]

    jac = torch.autograd.functional.jacobian(to_noise, x)
    u = to_noise(x)
    want = -0.5 * (u.square().sum() + 4 * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1]
    assert torch.allclose(flow.log_prob(x[None])[0], want)
    # sampling inverts the density direction
    z = torch.randn(6, 4, dtype=torch.float64)
    x_std = flow._rsample_standardised(z, None)
    assert torch.allclose(flow._to_noise(x_std, None)[0], z, atol=1e-10)


def test_save_and_load_round_trip(tmp_path):
    model = BlockAffineFlow(3, 3, transforms=2, context_features=1, hidden_features=(9,))
    model.fit_standardisation(torch.randn(50, 3) * 3 + 1)
    model.save(tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x, c = torch.randn(5, 3), torch.randn(5, 1)
    assert torch.allclose(loaded.log_prob(x, c), model.log_prob(x, c))
    assert torch.equal(loaded.scale, model.scale)


def test_mixture_latent_components_follow_the_data_clusters(tmp_path):
    """k-means on the data sets the components' centres and probabilities; the component of a
    draw follows those probabilities, every sample of a component starts at its centre, and
    save/load keeps them."""
    from energyflow.models.generator import kmeans

    torch.manual_seed(0)
    clusters = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    data = torch.cat([clusters[i] + 0.1 * torch.randn(n, 2) for i, n in enumerate((300, 600, 100))])
    centres, shares = kmeans(data, 3)
    order = centres[:, 0].argsort()
    torch.testing.assert_close(shares[order], torch.tensor([0.3, 0.1, 0.6]))  # x = -5, 0, 5
    model = SemiAutoregressiveGenerator(2, 1, mixture_components=3, hidden_features=(16,))
    model.fit_standardisation(data)
    assert model.noise_features == 2 + 1
    codes = model.component_codes(torch.randn(30000))
    cdf = model.component_cdf
    probabilities = torch.diff(cdf, prepend=cdf.new_zeros(1))
    torch.testing.assert_close(codes.mean(0), probabilities, atol=0.01, rtol=0)
    model.net.zero_output_layer()  # the network adds nothing: the centres alone
    samples = model.sample((500,))
    assert torch.cdist(samples, clusters).min(1).values.max() < 1.0
    model.save(tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    z = torch.randn(20, model.noise_features)
    torch.testing.assert_close(
        loaded._rsample_standardised(z, None), model._rsample_standardised(z, None)
    )
    with pytest.raises(ValueError, match="mixture_components"):
        SemiAutoregressiveGenerator(2, 1, mixture_components=-1)


@pytest.mark.parametrize("mixture", [0, 3])
def test_uniform_noise_is_the_bounded_image_of_the_drawn_normal(mixture, tmp_path):
    """``noise_distribution="uniform"`` hands the network sqrt(3) (2 Phi(z) - 1) of the drawn
    continuous units (bounded by sqrt 3, unit variance) and leaves the component picker as it
    is; the choice survives save / load, and an unknown one is refused by name."""
    model = SemiAutoregressiveGenerator(
        2, 2, mixture_components=mixture, noise_distribution="uniform", hidden_features=(8,)
    )
    seen = {}

    def record(noise, context, batch_shape):
        seen["noise"], seen["context"] = noise, context
        return noise.new_zeros(*batch_shape, 2)

    model.net.generate = record
    z = 4.0 * torch.randn(20000, model.noise_features)
    model._rsample_standardised(z, None)
    continuous = z[:, : model.net.noise_features]
    expected = math.sqrt(3.0) * (2.0 * torch.special.ndtr(continuous) - 1.0)
    torch.testing.assert_close(seen["noise"], expected)
    assert seen["noise"].abs().max() <= math.sqrt(3.0)
    unit = math.sqrt(3.0) * (2.0 * torch.special.ndtr(torch.randn(200000)) - 1.0)
    assert abs(float(unit.var()) - 1.0) < 0.01
    if mixture:
        torch.testing.assert_close(seen["context"], model.component_codes(z[:, -1]))
    del model.net.generate
    model.save(tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.noise_distribution == "uniform"
    z = torch.randn(10, model.noise_features)
    torch.testing.assert_close(
        loaded._rsample_standardised(z, None), model._rsample_standardised(z, None)
    )
    with pytest.raises(ValueError, match="noise_distribution must be one of"):
        SemiAutoregressiveGenerator(2, 1, noise_distribution="laplace")

"""Tests for the bitrate-controlled group quantizer (BCD, seed 001): shapes, exact rates, argmax, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facevid.errors import ConfigError
from facevid.model.quantize import GroupQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def make(seed: int = 0, **overrides) -> GroupQuantizer:
    torch.manual_seed(seed)
    settings = dict(dim=12, groups=3, codebook_size=8, code_dim=4, rate_target=4.0)
    return GroupQuantizer(**{**settings, **overrides})


def identity_quantizer(groups: int, codebook_size: int, code_dim: int, **overrides) -> GroupQuantizer:
    """proj_in = identity, well-separated codebooks: inputs can sit exactly on codebook entries."""
    quantizer = make(dim=groups * code_dim, groups=groups, codebook_size=codebook_size, code_dim=code_dim,
                     **overrides)
    with torch.no_grad():
        quantizer.proj_in.weight.copy_(torch.eye(groups * code_dim))
        quantizer.proj_in.bias.zero_()
        quantizer.codebooks.mul_(3.0)
    return quantizer


@pytest.mark.parametrize("lead", [(2, 5), (7,), ()])
@pytest.mark.parametrize("training", [False, True])
def test_shapes_ranges_and_embedding(lead, training):
    quantizer = make().train(training)
    out = quantizer(torch.randn(*lead, 12), generator=torch.Generator().manual_seed(0))
    assert out.quantized.shape == (*lead, 3 * 4) and out.quantized.dtype == torch.float32
    assert out.codes.shape == (*lead, 3) and out.codes.dtype == torch.int64
    assert out.codes.min() >= 0 and out.codes.max() < 8
    for scalar in (out.rate_loss, out.bits_soft, out.bits_hard, out.sample_entropy):
        assert scalar.shape == ()
    assert out.distinct.shape == (3,)
    assert 0 <= out.bits_hard <= quantizer.bits_per_frame_max == 3 * 3.0
    # `quantized` holds exactly the vectors of `codes` (sampled ones in training).
    assert torch.equal(out.quantized, quantizer.embed_codes(out.codes))


def test_bits_equal_entropy_of_known_histogram():
    quantizer = identity_quantizer(3, 8, 4, scale_init=1e3, rate_target=2.0)
    codes = torch.stack([
        torch.arange(16) % 8,  # uniform over 8 codes: 3 bits
        torch.full((16,), 5),  # one code: 0 bits
        torch.tensor([0] * 8 + [1] * 4 + [2] * 2 + [3] * 2),  # (1/2, 1/4, 1/8, 1/8): 1.75 bits
    ], dim=-1)  # (16, 3)
    x = quantizer.embed_codes(codes).detach()
    for training in (False, True):
        out = quantizer.train(training)(x, generator=torch.Generator().manual_seed(1))
        assert out.bits_soft.item() == pytest.approx(4.75, abs=1e-3)
        assert out.bits_hard.item() == pytest.approx(4.75, abs=1e-3)
        assert out.distinct.tolist() == [8, 1, 4]
        assert out.sample_entropy.item() == pytest.approx(0.0, abs=1e-3)
        assert out.rate_loss.item() == pytest.approx(0.04 * (4.75 - 2.0) ** 2, abs=1e-3)
    assert torch.equal(out.codes, codes)


def test_eval_takes_nearest_entry_deterministically():
    quantizer = make().eval()
    x = torch.randn(64, 12)
    first = quantizer(x, generator=torch.Generator().manual_seed(0))
    second = quantizer(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.codes, second.codes) and torch.equal(first.quantized, second.quantized)
    motion = quantizer.proj_in(x).detach().view(64, 3, 4)  # (N, G, d)
    for group in range(3):
        nearest = torch.cdist(motion[:, group], quantizer.codebooks[group].detach()).argmin(-1)
        assert torch.equal(first.codes[:, group], nearest)


def test_gradients_flow_through_quantizer_and_rate():
    quantizer = make().train()
    x = torch.randn(32, 12, requires_grad=True)
    out = quantizer(x, generator=torch.Generator().manual_seed(0))
    out.quantized.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert quantizer.codebooks.grad.abs().sum() > 0

    quantizer.zero_grad()
    quantizer(torch.randn(32, 12), generator=torch.Generator().manual_seed(0)).rate_loss.backward()
    assert quantizer.proj_in.weight.grad.abs().sum() > 0
    assert quantizer.codebooks.grad.abs().sum() > 0
    assert quantizer.log_scale.grad.abs() > 0


def test_training_codes_follow_the_generator_seed():
    quantizer = make(scale_init=0.05).train()  # soft logits: the gumbel noise decides most codes
    x = torch.randn(128, 12)
    run = lambda seed: quantizer(x, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first.codes, again.codes) and torch.equal(first.quantized, again.quantized)
    assert not torch.equal(first.codes, other.codes)


def test_temperature_anneals_and_is_saved():
    quantizer = make(tau_max=2.0, tau_min=0.5, tau_decay=0.5)
    assert quantizer.tau.item() == 2.0
    quantizer.step_temperature()
    assert quantizer.tau.item() == 1.0
    for _ in range(5):
        quantizer.step_temperature()
    assert quantizer.tau.item() == 0.5
    state = quantizer.state_dict()
    assert "tau" in state
    restored = make(tau_max=2.0, tau_min=0.5, tau_decay=0.5)
    restored.load_state_dict(state)
    assert restored.tau.item() == 0.5


def test_flat_logits_meet_the_rate_but_pay_the_sharpness_term():
    groups, size = 2, 16
    flat = identity_quantizer(groups, size, 2, scale_init=1e-4, rate_weight=0.0).eval()
    x = flat.embed_codes(torch.full((64, groups), 3)).detach() + 0.01 * torch.randn(64, groups * 2)
    trap = flat(x)
    # The soft rate looks like a rich code while every hard code is the same.
    assert trap.bits_soft.item() == pytest.approx(groups * math.log2(size), abs=0.01)
    assert trap.bits_hard.item() == pytest.approx(0.0, abs=1e-6)
    assert trap.distinct.tolist() == [1, 1]

    sharp = identity_quantizer(groups, size, 2, scale_init=1e3, rate_weight=0.0).eval()
    confident = sharp(sharp.embed_codes(torch.randint(size, (64, groups))).detach())
    assert confident.bits_hard > 1.0
    # With rate_weight 0 the rate loss is the sharpness term alone.
    assert trap.rate_loss.item() == pytest.approx(0.01 * groups * trap.sample_entropy.item(), rel=1e-5)
    assert trap.rate_loss.item() > 0.01 * groups * 3.9 > 100 * confident.rate_loss.item()


def test_short_optimisation_moves_hard_rate_to_target():
    generator = torch.Generator().manual_seed(0)
    centers = 0.2 * torch.randn(16, 2, generator=generator)  # tight clusters: ~1 bit at init
    x = centers[torch.randint(16, (128,), generator=generator)] + 0.02 * torch.randn(128, 2, generator=generator)
    quantizer = make(dim=2, groups=1, codebook_size=16, code_dim=2, rate_target=3.0)
    decoder = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam([*quantizer.parameters(), *decoder.parameters()], lr=0.05)
    before = quantizer.eval()(x).bits_hard.item()
    quantizer.train()
    for _ in range(200):
        out = quantizer(x, generator=generator)
        loss = F.mse_loss(decoder(out.quantized), x) + out.rate_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        quantizer.step_temperature()
    after = quantizer.eval()(x)
    assert abs(before - 3.0) > 1.5
    assert abs(after.bits_hard.item() - 3.0) < 1.0
    assert after.sample_entropy < 0.5  # reached with distinct confident codes, not flat logits


def test_bad_settings_and_inputs_raise():
    with pytest.raises(ConfigError):
        make(codebook_size=1)
    with pytest.raises(ConfigError):
        make(tau_min=3.0, tau_max=2.0)
    assert float(make(tau_min=1.0, tau_max=1.0).tau) == 1.0        # a constant temperature is allowed
    quantizer = make()
    with pytest.raises(ValueError):
        quantizer(torch.randn(4, 11))
    with pytest.raises(ValueError):
        quantizer.embed_codes(torch.zeros(4, 2, dtype=torch.long))


def test_the_presets_quantizer_charges_only_a_rate_above_its_target():
    """The quantizer as the small preset builds it (normalised codes, a running code histogram,
    no gumbel noise): a rate under the target costs nothing but the sharpness term, a rate over
    it costs rate_weight * (R - target)^2 on top (a two-sided rate term pulls the codes up to
    the target: measured, they then spend the bits on who is in the clip, not on motion)."""
    from facevid.config import PRESETS
    from facevid.model.facevid import FaceVid

    cfg = PRESETS["small"]
    quantizer = FaceVid(cfg).quantizer.train()
    assert (quantizer.rate_target, quantizer.rate_weight) == (cfg.rate_target, cfg.rate_weight)
    same = torch.randn(1, 1, cfg.enc_dim).expand(8, 4, -1)
    for _ in range(60):                                  # one input over and over: the histogram narrows
        low = quantizer(same)
    assert low.bits_soft.item() < cfg.rate_target - 4
    sharpness = cfg.vq_sharpness * cfg.vq_groups * low.sample_entropy
    assert low.rate_loss.item() == pytest.approx(sharpness.item(), rel=1e-4, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):                                  # every frame different: the histogram spreads
        high = quantizer(torch.randn(8, 4, cfg.enc_dim, generator=generator) * 3)
    assert high.bits_soft.item() > cfg.rate_target + 4
    above = cfg.rate_weight * (high.bits_soft - cfg.rate_target) ** 2
    sharpness = cfg.vq_sharpness * cfg.vq_groups * high.sample_entropy
    assert high.rate_loss.item() == pytest.approx((above + sharpness).item(), rel=1e-4)


def test_gumbel_noise_is_finite_even_where_the_uniform_draw_is_zero(monkeypatch):
    """torch.rand draws from [0, 1): an exact 0 must not become an infinite Gumbel sample."""
    from facevid.model import quantize

    monkeypatch.setattr(quantize.torch, "rand", lambda shape, **kw: torch.zeros(shape))
    assert torch.isfinite(quantize._gumbel_noise(torch.Size([4]), None, torch.device("cpu"))).all()


def test_normalised_logits_ignore_each_groups_length():
    """normalize=True (as the presets set it): each group's motion vector is scaled to unit length
    on its own, so scaling one group's part leaves every group's logits as they were (normalising
    across the groups instead would change them all)."""
    quantizer = make(normalize=True).eval()
    motion = torch.randn(5, 12)
    scaled = motion.clone()
    scaled[:, :4] *= 7.0                      # group 0's four components
    scaled[:, 8:] *= 0.2                      # group 2's
    assert torch.allclose(quantizer.logits(motion), quantizer.logits(scaled), atol=1e-5)
    assert not torch.allclose(make(normalize=False).logits(motion), make(normalize=False).logits(scaled))


def test_a_fixed_scale_is_a_saved_buffer_not_a_parameter():
    """learn_scale=False: the logit scale stays scale_init through training and travels in the
    state dict (a buffer), where learn_scale=True makes it a parameter the optimiser moves."""
    fixed, learned = make(learn_scale=False, scale_init=3.0), make(learn_scale=True, scale_init=3.0)
    assert "log_scale" in fixed.state_dict() and "log_scale" not in dict(fixed.named_parameters())
    assert "log_scale" in dict(learned.named_parameters())
    assert float(fixed.scale) == pytest.approx(3.0)


def test_code_usage_starts_as_the_uniform_distribution():
    """The running usage the rate is mixed with (usage_momentum > 0) starts uniform: each group's
    row a distribution over its codes (a row summing to 2 would count every code twice)."""
    usage = make(usage_momentum=0.9).usage
    assert usage.shape == (3, 8) and torch.allclose(usage, torch.full((3, 8), 1 / 8))

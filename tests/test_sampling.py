"""EDM preconditioning, schedules and ODE samplers on analytic toy denoisers."""

import math

import pytest
import torch

from facevid.errors import ConfigError
from facevid.sampling import (
    SAMPLERS,
    SIGMA_DATA,
    Denoiser,
    check_sampler,
    edm_loss_weight,
    edm_preconditioning,
    guided,
    invert,
    karras_sigmas,
    sample,
    sample_training_sigmas,
    scheduler_sample,
)

F64 = torch.float64

# 1-D two-Gaussian mixtures: weights, means, standard deviations. SHARP has two separated
# modes (mixture weights are readable from the sign); BROAD overlaps at the σ_data scale.
WEIGHTS = torch.tensor([0.3, 0.7], dtype=F64)
MEANS = torch.tensor([-1.0, 1.0], dtype=F64)
STDS = torch.tensor([0.2, 0.3], dtype=F64)
BROAD = tuple(torch.tensor(v, dtype=F64) for v in ([0.4, 0.6], [-0.5, 0.5], [0.5, 0.5]))


def mixture_denoiser(x, sigma, weights=WEIGHTS, means=MEANS, stds=STDS):
    """E[x0 | x0 + σn = x] for a Gaussian mixture: the optimal EDM denoiser, in closed form."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))[..., None]  # (B, 1.., 1)
    var = stds**2 + sigma**2  # noisy variance per component
    xk = x[..., None]
    log_resp = weights.log() - 0.5 * var.log() - 0.5 * (xk - means) ** 2 / var
    resp = log_resp.softmax(dim=-1)
    posterior = means + stds**2 / var * (xk - means)
    return (resp * posterior).sum(dim=-1)


def mixture_stats(samples):
    split = 0.0  # between the two means; components are 5+ stds away from it
    return samples.mean().item(), samples.std().item(), (samples > split).double().mean().item()


# --- preconditioning -------------------------------------------------------------------


def test_preconditioning_identities():
    sigma = torch.tensor([0.0, 0.002, 0.1, 0.5, 1.0, 80.0], dtype=F64)
    sd = SIGMA_DATA
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma)
    assert c_skip[0] == 1 and c_out[0] == 0 and c_noise[0] == -math.inf
    torch.testing.assert_close(c_in**2 * (sigma**2 + sd**2), torch.ones_like(sigma))
    # c_skip + c_out²/σd² = 1, and c_out² = c_skip σ² (both follow from EDM Table 1).
    torch.testing.assert_close(c_skip + c_out**2 / sd**2, torch.ones_like(sigma))
    torch.testing.assert_close(c_out**2, c_skip * sigma**2)
    torch.testing.assert_close(c_noise[1:], sigma[1:].log() / 4)
    # λ(σ) c_out(σ)² = 1: the weighted D loss is the plain F loss.
    weight = edm_loss_weight(sigma[1:])
    torch.testing.assert_close(weight * c_out[1:] ** 2, torch.ones_like(weight))


@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0, 80.0])
def test_network_input_and_target_have_unit_variance(sigma):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(100_000, generator=gen, dtype=F64) * SIGMA_DATA
    x = x0 + sigma * torch.randn(100_000, generator=gen, dtype=F64)
    c_skip, c_out, c_in, _ = edm_preconditioning(torch.tensor(sigma, dtype=F64))
    target = (x0 - c_skip * x) / c_out  # what F is trained to output
    assert abs((c_in * x).std().item() - 1) < 0.01
    assert abs(target.std().item() - 1) < 0.01


# --- schedules -------------------------------------------------------------------------


def test_karras_sigmas():
    sigmas = karras_sigmas(18, dtype=F64)
    assert sigmas.shape == (19,)
    assert sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[-2].item() == pytest.approx(0.002)
    assert sigmas[-1].item() == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    custom = karras_sigmas(5, sigma_min=0.01, sigma_max=10.0, rho=3.0)
    assert custom.dtype == torch.float32 and custom.shape == (6,)
    assert custom[0].item() == pytest.approx(10.0) and custom[-2].item() == pytest.approx(0.01)
    with pytest.raises(ConfigError):
        karras_sigmas(0)


def test_training_sigmas_seeded():
    a = sample_training_sigmas(1000, generator=torch.Generator().manual_seed(3))
    b = sample_training_sigmas(1000, generator=torch.Generator().manual_seed(3))
    c = sample_training_sigmas(1000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a > 0).all()
    big = sample_training_sigmas(100_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert big.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert big.log().std().item() == pytest.approx(1.2, abs=0.02)


# --- Denoiser ----------------------------------------------------------------------------


def network_from_denoiser(denoise):
    """The F that makes Denoiser(F) equal to ``denoise``: invert EDM Eq. 7."""

    def network(x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma)
        shape = (-1, *([1] * (x_in.ndim - 1)))
        x = x_in / c_in.reshape(shape)
        return (denoise(x, sigma) - c_skip.reshape(shape) * x) / c_out.reshape(shape)

    return network


def test_denoiser_wraps_network_and_broadcasts_sigma():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, generator=gen, dtype=F64) * 2
    model = Denoiser(network_from_denoiser(mixture_denoiser))
    sigma = torch.tensor([0.01, 0.3, 2.0, 40.0], dtype=F64)
    torch.testing.assert_close(model(x, sigma), mixture_denoiser(x, sigma))
    torch.testing.assert_close(model(x, 0.7), mixture_denoiser(x, torch.full((4,), 0.7, dtype=F64)))
    with pytest.raises(ConfigError):
        model(x, torch.ones(3, dtype=F64))


def test_loss_zero_for_perfect_network_positive_otherwise():
    point = torch.tensor([0.3, -0.2, 0.9], dtype=F64)  # data is this one point: D* = point
    perfect = Denoiser(network_from_denoiser(lambda x, sigma: point.expand_as(x)))
    gen = torch.Generator().manual_seed(1)
    x0 = point.expand(8, 3)
    noise = torch.randn(8, 3, generator=gen, dtype=F64)
    sigma = sample_training_sigmas(8, generator=gen, dtype=F64)
    loss = perfect.loss(x0, noise, sigma)
    assert loss.shape == (8,) and loss.abs().max().item() < 1e-20
    zero = Denoiser(lambda x_in, c_noise: torch.zeros_like(x_in))
    bad = zero.loss(x0, noise, sigma)
    assert (bad > 0).all()
    # Equal to λ(σ)·‖D − x0‖² computed the direct way.
    direct = edm_loss_weight(sigma) * ((zero(x0 + sigma[:, None] * noise, sigma) - x0) ** 2).mean(1)
    torch.testing.assert_close(bad, direct)


# --- samplers ----------------------------------------------------------------------------


@pytest.mark.parametrize("method, n_steps", [("heun", 18), ("euler", 40)])
def test_sampler_reaches_mixture(method, n_steps):
    noise = torch.randn(20_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    sigmas = karras_sigmas(n_steps, dtype=F64)
    calls = []
    samples = sample(mixture_denoiser, noise, sigmas, method=method,
                     progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (n_steps, n_steps) and len(calls) == n_steps
    mean, std, weight_right = mixture_stats(samples)
    exact_mean = (WEIGHTS * MEANS).sum().item()
    exact_std = ((WEIGHTS * (STDS**2 + MEANS**2)).sum().item() - exact_mean**2) ** 0.5
    # Measured: heun 18 mean -0.017, std +0.032; euler 40 mean -0.010, std -0.029 (the mean
    # offset is mostly this noise draw's weight, 0.691). Euler 18 (std -0.078) and Heun 10
    # (std +0.13) fail these bounds, so they catch a lost Heun correction.
    assert mean == pytest.approx(exact_mean, abs=0.03)
    assert std == pytest.approx(exact_std, abs=0.05)
    assert weight_right == pytest.approx(WEIGHTS[1].item(), abs=0.015)
    for part, mu, sd in [(samples[samples < 0], MEANS[0], STDS[0]),
                         (samples[samples > 0], MEANS[1], STDS[1])]:
        assert part.mean().item() == pytest.approx(mu.item(), abs=0.05)
        assert part.std().item() == pytest.approx(sd.item(), abs=0.03)


@pytest.mark.parametrize("method", ["heun", "euler"])
def test_sampler_lands_on_single_point(method):
    point = torch.tensor([[0.25, -1.5]], dtype=F64)
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = sample(lambda x, sigma: point.expand_as(x), noise, karras_sigmas(6, dtype=F64),
                 method=method)
    torch.testing.assert_close(out, point.expand_as(out), rtol=0, atol=1e-12)


def test_sampler_rejects_bad_arguments():
    noise = torch.randn(2)
    with pytest.raises(ConfigError, match="heun"):
        sample(mixture_denoiser, noise, karras_sigmas(4), method="dpm")
    with pytest.raises(ConfigError):
        sample(mixture_denoiser, noise, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ConfigError, match="^noise levels must be finite"):   # the last one below 0
        sample(mixture_denoiser, noise, torch.tensor([2.0, 1.0, -0.5]))
    with pytest.raises(ConfigError, match="choose one of heun, euler"):
        sample(mixture_denoiser, noise, karras_sigmas(4), method="dpm")


def round_trip_error(n_steps, mixture, x0):
    denoise = lambda x, sigma: mixture_denoiser(x, sigma, *mixture)  # noqa: E731
    sigmas = karras_sigmas(n_steps, dtype=F64)
    noisy = invert(denoise, x0, sigmas)
    back = sample(denoise, noisy / sigmas[0], sigmas)
    return (back - x0).abs().max().item(), noisy


def test_invert_then_sample_round_trip():
    # Max |error| of sample(invert(x0)) on x0 in [-1.5, 1.5], Heun, float64, measured:
    #   BROAD:  8 steps 2.2e-01, 16 steps 2.8e-02, 32 steps 3.2e-03, 64 steps 3.7e-04.
    #   SHARP:  8 steps 1.6e+00, 16 steps 8.1e-01, 32 steps 2.8e-01, 64 steps 9.4e-02; the worst
    #   points sit in the near-empty gap between the modes, where the flow is ill-conditioned
    #   (on points drawn from the data: 32 steps 1.2e-01, 64 steps 2.7e-02, median 1e-3 / 2e-4).
    x0 = torch.linspace(-1.5, 1.5, 301, dtype=F64)
    errors = {n: round_trip_error(n, BROAD, x0)[0] for n in (8, 16, 32, 64)}
    print("\ninversion round trip, max abs error (heun, broad mixture):",
          {n: f"{e:.1e}" for n, e in errors.items()})
    assert errors[64] < 1e-3
    assert errors[64] < errors[32] < errors[16] < errors[8]
    _, noisy = round_trip_error(64, BROAD, x0)
    assert (noisy[1:] > noisy[:-1]).all()  # a 1-D flow keeps order
    assert noisy.abs().max().item() > 50  # and lands at the σ_max = 80 scale


# --- guidance ----------------------------------------------------------------------------


class CountingDenoiser:
    """denoise(x, sigma, label) = x·0.1 + label; records the batch size of every call."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, label):
        self.batches.append(x.shape[0])
        return 0.1 * x / (1 + sigma[:, None]) + label


def test_guidance_scales():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, generator=gen, dtype=F64)
    sigma = torch.full((3,), 0.8, dtype=F64)
    cond = {"label": torch.randn(3, 2, generator=gen, dtype=F64)}
    uncond = {"label": torch.zeros(1, 2, dtype=F64)}  # a shared null condition
    net = CountingDenoiser()
    torch.testing.assert_close(guided(net, 1.0, cond, uncond)(x, sigma), net(x, sigma, **cond))
    torch.testing.assert_close(guided(net, 0.0, cond, uncond)(x, sigma), net(x, sigma, **uncond))
    net.batches.clear()
    mixed = guided(net, 1.5, cond, uncond)(x, sigma)
    assert net.batches == [6]  # both halves in one forward
    d_c, d_u = net(x, sigma, **cond), net(x, sigma, **uncond)
    torch.testing.assert_close(mixed, d_u + 1.5 * (d_c - d_u))


def test_guidance_falls_back_to_two_calls():
    x = torch.ones(2, 2, dtype=F64)
    sigma = torch.ones(2, dtype=F64)
    net = CountingDenoiser()
    fn = guided(net, 2.0, {"label": torch.ones(2, 2, dtype=F64)}, {"label": 0.0})
    out = fn(x, sigma)
    assert net.batches == [2, 2]
    torch.testing.assert_close(out, net(x, sigma, label=0.0) + 2 * (1 - 0.0))


def test_guidance_batches_per_sample_vectors_and_keeps_distinct_settings_apart():
    """A per-sample condition of one dimension (B,) goes into the one 2B forward; two settings
    that cannot be compared (numpy arrays) are not taken for the same: two calls, each its own."""
    import numpy as np

    x = torch.ones(3, 2, dtype=F64)
    sigma = torch.ones(3, dtype=F64)
    calls = []

    def net(x, sigma, label, extra=None):
        calls.append(x.shape[0])
        return x * (label[:, None] if label.ndim == 1 else label) + (0 if extra is None else float(extra.sum()))

    label_c, label_u = torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.zeros(3, dtype=F64)
    out = guided(net, 2.0, {"label": label_c}, {"label": label_u})(x, sigma)
    assert calls == [6]
    torch.testing.assert_close(out, 2 * x * label_c[:, None])
    calls.clear()
    out = guided(net, 2.0, {"label": label_c, "extra": np.ones(2)}, {"label": label_u, "extra": np.zeros(2)})(x, sigma)
    assert calls == [3, 3]
    torch.testing.assert_close(out, 2 * (x * label_c[:, None] + 2.0))   # D_u = 0, D_c = x·label + 2


def test_guided_sampling_scale_one_calls_once_per_step():
    net = CountingDenoiser()
    cond = {"label": torch.full((4, 2), 0.5, dtype=F64)}
    uncond = {"label": torch.zeros(4, 2, dtype=F64)}
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    sigmas = karras_sigmas(5, dtype=F64)
    out = sample(guided(net, 1.0, cond, uncond), noise, sigmas, method="heun")
    assert net.batches == [4] * (2 * 5 - 1)  # Heun: 2 calls a step, 1 on the last (σ_next = 0)
    net_plain = CountingDenoiser()
    torch.testing.assert_close(out, sample(net_plain, noise, sigmas, cond=cond))
    net.batches.clear()
    sample(guided(net, 1.5, cond, uncond), noise, sigmas, method="euler")
    assert net.batches == [8] * 5


# --- diffusers' EDM schedulers -----------------------------------------------------------


def _mixture32(x, sigma):
    return mixture_denoiser(x.double(), sigma.double()).float()


@pytest.mark.parametrize("n_steps", [2, 6, 18])
def test_diffusers_euler_is_the_own_euler(n_steps):
    """scheduler_sample("euler") steps through diffusers' EDMEulerScheduler; the own Euler is
    the reference: the same states within float32 rounding."""
    noise = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    own = sample(_mixture32, noise, karras_sigmas(n_steps, sigma_max=2.0), method="euler")
    theirs = scheduler_sample(_mixture32, noise, n_steps, sampler="euler", sigma_max=2.0)
    torch.testing.assert_close(theirs, own, rtol=0, atol=2e-5)
    assert (theirs - noise * 2.0).abs().mean() > 0.1   # it moved


def test_diffusers_dpm_solver_is_second_order():
    """DPM-Solver++ 2M (diffusers) converges on the probability-flow ODE's solution (Heun at 200
    steps) as a 2nd-order method: measured mean errors at 40 steps dpm++ 0.005, euler 0.037;
    at 12 dpm++ evaluations 0.113 against Heun's 0.48 at 11 (6 steps)."""
    noise = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    exact = sample(_mixture32, noise, karras_sigmas(200), method="heun")

    def error(x):
        return (x - exact).abs().mean().item()

    dpm, euler = (error(scheduler_sample(_mixture32, noise, 40, sampler=m)) for m in ("dpm++", "euler"))
    assert dpm < 0.01 < 0.03 < euler
    assert error(scheduler_sample(_mixture32, noise, 12, sampler="dpm++")) < 0.5 * error(
        sample(_mixture32, noise, karras_sigmas(6), method="heun"))


def test_scheduler_sample_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="euler"):
        scheduler_sample(_mixture32, torch.randn(2), 4, sampler="heun")
    with pytest.raises(ConfigError, match="dpm"):
        check_sampler("ddim")
    assert [check_sampler(s) for s in SAMPLERS] == list(SAMPLERS)

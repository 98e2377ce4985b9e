"""EDM sigma schedules, preconditioning and ODE samplers (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", arXiv:2206.00364).

Everything here works on a denoiser ``denoise(x, sigma, **cond) -> x0_hat`` where ``x`` is a
batch ``(B, ...)`` and ``sigma`` a tensor of shape ``(B,)``: one noise level per sample.
``Denoiser`` builds such a callable from a raw network F with the EDM preconditioning
(Table 1, "Ours"); ``sample`` integrates the probability-flow ODE dx/dσ = (x - D(x; σ))/σ
from noise to data (Algorithm 1 without churn) and ``invert`` runs the same ODE from data to
noise, which keeps background and detail that the motion codes do not carry (seed 003).

Inversion convention: ``invert`` returns x at σ_max *already multiplied by σ*, i.e. a sample
of the noisy marginal, not unit noise. ``sample(denoise, invert(denoise, x0, sigmas) /
sigmas[0], sigmas)`` reproduces ``x0`` up to the ODE discretisation error.

Samplers (``SAMPLERS``): "euler" and "dpm++" are diffusers' EDM schedulers (EDMEulerScheduler,
EDMDPMSolverMultistepScheduler with DPM-Solver++ 2M), driven by ``scheduler_sample``; diffusers
is imported only when one of them runs (it costs ~2.5 s here). "heun" (EDM's 2nd-order
Algorithm 1) and the ODE inversion are our own code, because diffusers has neither for EDM (its
HeunDiscreteScheduler walks a DDPM training schedule, and no scheduler steps towards noise).
The own Euler stays as the reference the diffusers one is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from facevid.errors import ConfigError

SIGMA_DATA = 0.5  # standard deviation of the training data (EDM default for images in [-1, 1])
METHODS = ("heun", "euler")      # the own integrator's steps (sample, invert)
SAMPLERS = ("heun", "euler", "dpm++")   # what --sampler offers: heun own, euler and dpm++ by diffusers

Denoise = Callable[..., torch.Tensor]  # denoise(x, sigma, **cond) -> x0_hat


def check_sampler(name: str) -> str:
    """`name` if --sampler offers it, else ConfigError."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown --sampler '{name}' (choose from {', '.join(SAMPLERS)})")
    return name


def edm_preconditioning(sigma, *, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) for noise level ``sigma`` (EDM Table 1).

    c_skip = σd²/(σ²+σd²), c_out = σ σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ln(σ)/4.
    At σ = 0, c_noise is -inf; the other three are finite (c_skip = 1, c_out = 0).
    """
    sigma = _as_float_tensor(sigma)
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = total.rsqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma, *, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """λ(σ) = (σ²+σd²)/(σ σd)² (EDM Table 1); λ(σ)·c_out(σ)² = 1, so F's loss is unweighted."""
    sigma = _as_float_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_training_sigmas(
    n: int,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` training noise levels, ln σ ~ N(p_mean, p_std²) (EDM Table 1); shape ``(n,)``."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    log_sigma = torch.randn(n, generator=generator, device=device, dtype=dtype)
    return (log_sigma * p_std + p_mean).exp()


def karras_sigmas(
    n_steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ρ-schedule of EDM Eq. 5: ``n_steps + 1`` decreasing values, σ_max … σ_min, then 0."""
    if n_steps < 1:
        raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    ramp = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype)


class Denoiser(torch.nn.Module):
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise) around a raw network F (EDM Eq. 7).

    ``network(x_in, c_noise, **cond)`` gets ``c_noise`` of shape ``(B,)``; ``sigma`` may be a
    scalar or a ``(B,)`` tensor.
    """

    def __init__(self, network: torch.nn.Module | Callable, *, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.network = network
        self.sigma_data = sigma_data

    def _scalings(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, ...]:
        sigma = _per_sample(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data=self.sigma_data)
        return _bcast(c_skip, x), _bcast(c_out, x), _bcast(c_in, x), c_noise

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = self._scalings(x, sigma)
        return c_skip * x + c_out * self.network(c_in * x, c_noise, **cond)

    def loss(self, x0: torch.Tensor, noise: torch.Tensor, sigma, *, weight: torch.Tensor | None = None,
             **cond) -> torch.Tensor:
        """Per-sample λ(σ)·mean‖D(x0 + σn; σ) − x0‖², shape ``(B,)`` (EDM Eq. 8); `weight`
        (broadcast to x0) weighs each pixel's squared error in the mean.

        Computed in F's space, ‖F − (x0 − c_skip x)/c_out‖², which is the same value because
        λ c_out² = 1, but avoids dividing by a small σ².
        """
        x = x0 + _bcast(_per_sample(sigma, x0), x0) * noise
        c_skip, c_out, c_in, c_noise = self._scalings(x, sigma)
        target = (x0 - c_skip * x) / c_out
        error = (self.network(c_in * x, c_noise, **cond) - target) ** 2
        if weight is not None:
            error = error * weight
        return error.flatten(1).mean(dim=1)


def guided(denoise: Denoise, scale: float, cond: Mapping, uncond: Mapping) -> Denoise:
    """Classifier-free guidance: D_u + scale·(D_c − D_u) (Ho & Salimans 2022).

    Returns ``fn(x, sigma, **shared)``. Scale 1 calls only the conditional denoiser and
    scale 0 only the unconditional one. Otherwise both go through one forward of batch 2B
    when every condition is a per-sample tensor (leading dim B or 1) or the same value in
    both dicts; else two calls are made.
    """

    def fn(x: torch.Tensor, sigma, **shared) -> torch.Tensor:
        c, u = {**shared, **cond}, {**shared, **uncond}
        if scale == 1:
            return denoise(x, sigma, **c)
        if scale == 0:
            return denoise(x, sigma, **u)
        both = _concat_conditions(c, u, x.shape[0])
        if both is None:
            d_cond, d_uncond = denoise(x, sigma, **c), denoise(x, sigma, **u)
        else:
            sigma2 = _per_sample(sigma, x).repeat(2)
            d_cond, d_uncond = denoise(torch.cat([x, x]), sigma2, **both).chunk(2)
        return d_uncond + scale * (d_cond - d_uncond)

    return fn


@torch.no_grad()
def sample(
    denoise: Denoise,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    method: str = "heun",
    cond: Mapping | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from σ = sigmas[0] to sigmas[-1] (EDM Algorithm 1).

    ``noise`` is unit Gaussian noise; x starts at ``noise * sigmas[0]``. Heun falls back to an
    Euler step when σ_next = 0. ``progress(step, n_steps)`` is called after every step.
    """
    levels = _check_schedule(sigmas, method)
    return _integrate(denoise, noise * levels[0], levels, method, dict(cond or {}), progress)


@torch.no_grad()
def invert(
    denoise: Denoise,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    method: str = "heun",
    cond: Mapping | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run the ODE of ``sample`` backwards, from the clean frame ``x0`` to σ_max = sigmas[0].

    The ODE is singular at σ = 0, so ``x0`` is taken as x at σ_min (the last non-zero level)
    and integrated up ``reversed(sigmas[:-1])``. Returns x at σ_max, already multiplied by σ:
    pass ``invert(...) / sigmas[0]`` as ``noise`` to ``sample`` with the same ``sigmas``.
    """
    levels = _check_schedule(sigmas, method)
    if levels[-1] == 0:
        levels = levels[:-1]
    return _integrate(denoise, x0, levels[::-1], method, dict(cond or {}), progress)


@torch.no_grad()
def scheduler_sample(denoise: Denoise, noise: torch.Tensor, n_steps: int, *, sampler: str = "euler",
                     sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                     cond: Mapping | None = None, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """``sample`` with one of diffusers' EDM schedulers ("euler" or "dpm++") on the Karras
    schedule ``karras_sigmas(n_steps, ...)`` gives: x starts at ``noise * sigma_max``. The
    schedulers step on the raw network output F; ``denoise`` gives D = c_skip x + c_out F, so
    F is recovered from it (the same c_skip, c_out diffusers uses)."""
    if sampler not in ("euler", "dpm++"):
        raise ConfigError(f"unknown sampler {sampler!r} for diffusers; choose euler or dpm++")
    if n_steps < 1:
        raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
    from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

    common = dict(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, sigma_schedule="karras",
                  rho=rho, prediction_type="epsilon", final_sigmas_type="zero")
    scheduler = EDMEulerScheduler(**common) if sampler == "euler" else \
        EDMDPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    scheduler.set_timesteps(n_steps, device=noise.device)
    x, cond = noise * sigma_max, dict(cond or {})
    for t in scheduler.timesteps:
        scheduler.scale_model_input(x, t)        # finds the step's σ (its scaled input is not needed: D is)
        sigma = float(scheduler.sigmas[scheduler.step_index])
        c_skip, c_out, _, _ = edm_preconditioning(torch.tensor(sigma, dtype=torch.float64), sigma_data=sigma_data)
        x0 = denoise(x, x.new_full((x.shape[0],), sigma), **cond)
        x = scheduler.step((x0 - float(c_skip) * x) / float(c_out), t, x).prev_sample
    return x


def _integrate(denoise, x, levels, method, cond, progress) -> torch.Tensor:
    """Euler/Heun steps of dx/dσ = (x − D(x; σ))/σ along ``levels`` (either direction)."""
    n_steps = len(levels) - 1
    for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
        sigma_b = x.new_full((x.shape[0],), sigma)
        slope = (x - denoise(x, sigma_b, **cond)) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if method == "heun" and sigma_next != 0:
            sigma_next_b = x.new_full((x.shape[0],), sigma_next)
            slope_next = (x_next - denoise(x_next, sigma_next_b, **cond)) / sigma_next
            x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
        x = x_next
        if progress is not None:
            progress(i + 1, n_steps)
    return x


def _check_schedule(sigmas, method: str) -> list[float]:
    """Check the method and a decreasing schedule; return it as Python floats (one device sync)."""
    if method not in METHODS:
        raise ConfigError(f"unknown sampling method {method!r}; choose one of {', '.join(METHODS)}")
    levels = torch.as_tensor(sigmas).detach().flatten().tolist()
    if len(levels) < 2:
        raise ConfigError(f"a schedule needs at least 2 noise levels, got {len(levels)}")
    if any(not math.isfinite(s) or s <= 0 for s in levels[:-1]) or levels[-1] < 0:
        raise ConfigError("noise levels must be finite and > 0 (only the last may be 0)")
    if any(b >= a for a, b in zip(levels[:-1], levels[1:])):
        raise ConfigError("noise levels must be strictly decreasing, e.g. karras_sigmas(...)")
    return levels


def _concat_conditions(cond: dict, uncond: dict, batch: int) -> dict | None:
    """Stack two condition dicts along the batch for one 2B forward, or None if impossible."""
    if cond.keys() != uncond.keys():
        return None
    both = {}
    for key, a in cond.items():
        b = uncond[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.ndim == 0 or b.ndim == 0 or a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                return None
            if a.shape[0] not in (1, batch) or b.shape[0] not in (1, batch):
                return None
            both[key] = torch.cat([a.expand(batch, *a.shape[1:]), b.expand(batch, *b.shape[1:])])
        elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or not _same(a, b):
            return None
        else:
            both[key] = a  # a non-tensor setting that both calls share
    return both


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. numpy arrays: ambiguous truth value
        return False


def _as_float_tensor(value) -> torch.Tensor:
    value = torch.as_tensor(value)
    return value if value.is_floating_point() else value.to(torch.get_default_dtype())


def _per_sample(sigma, x: torch.Tensor) -> torch.Tensor:
    """σ as a ``(B,)`` tensor on x's device and dtype, from a scalar, (1,) or (B,) value."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).flatten()
    if sigma.numel() == 1:
        return sigma.expand(x.shape[0])
    if sigma.numel() != x.shape[0]:
        raise ConfigError(f"sigma has {sigma.numel()} values for a batch of {x.shape[0]}")
    return sigma


def _bcast(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor viewed as ``(B, 1, ..., 1)`` to broadcast against x."""
    return value.reshape(-1, *([1] * (x.ndim - 1)))

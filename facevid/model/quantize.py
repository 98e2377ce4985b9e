"""Bitrate-controlled group vector quantizer of BCD (seed 001, "Bitrate-Controlled Diffusion", Sec. 3.2).

The per-frame motion feature is projected to G groups of d channels; group i is quantized
against its own codebook of V entries with a distance-gumbel-softmax:

    logits_ij = -s * ||m_i - e_ij||^2,    p_ij = softmax_j(logits_ij)

Training samples one code per group with straight-through gumbel-softmax at temperature tau
(annealed from tau_max to tau_min); inference takes the argmax. The bitrate is the entropy of
the code distribution averaged over the batch, R = sum_i H(p̄_i) bits per frame, and the rate
loss pulls it towards a target: rate_weight * (R - R_target)^2 (paper: weight 0.04);
facevid charges only a rate above the target (see ``_rate_loss``).

facevid adds a sharpness term (the mean per-sample entropy of p) to that loss; see
``_rate_loss`` for why. All rates are in bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevid.errors import ConfigError

LOG_EPS = 1e-12  # floor inside log2 for batch-averaged probabilities (a code nobody uses adds 0 bits)


@dataclass
class QuantizerOutput:
    """What ``GroupQuantizer.forward`` returns; leading dims ``...`` are those of the input."""

    quantized: Tensor  # (..., G*d) code vectors; training: sampled codes, straight-through gradient
    codes: Tensor  # (..., G) int64 indices of the vectors in `quantized` (sampled in training, argmax in eval)
    rate_loss: Tensor  # () rate_weight * relu(bits_soft - target)^2 + sharpness_weight * G * sample_entropy
    bits_soft: Tensor  # () sum_i H(p̄_i) in bits, p̄ = p averaged over all leading positions (differentiable)
    bits_hard: Tensor  # () sum_i H(histogram of argmax codes) in bits, noise-free in both modes (detached)
    distinct: Tensor  # (G,) int64 number of distinct argmax codes per group in this batch
    sample_entropy: Tensor  # () mean per-position entropy of p in bits per group (flat-logit detector, detached)
    continuous: Tensor | None = None  # (..., G*d) what is quantized: the projected motion, per-group
                                      # unit vectors when normalizing (the codes approximate it)


def _entropy_bits(probs: Tensor) -> Tensor:
    """Entropy in bits along the last dim of a probability tensor (zeros contribute 0)."""
    return -(probs * torch.log2(probs.clamp_min(LOG_EPS))).sum(-1)


def _histogram_bits(codes: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Entropy in bits (summed over groups) and distinct-count per group of hard codes (N, G)."""
    counts = F.one_hot(codes, codebook_size).sum(0).float()  # (G, V)
    bits = _entropy_bits(counts / counts.sum(-1, keepdim=True)).sum()
    return bits, (counts > 0).sum(-1)


def _gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel(0, 1) noise drawn from ``generator`` (the global RNG when None)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-7)))


class GroupQuantizer(nn.Module):
    """Group VQ with a distance-gumbel-softmax and a differentiable bitrate (BCD, seed 001)."""

    def __init__(self, *, dim: int, groups: int, codebook_size: int, code_dim: int, rate_target: float,
                 rate_weight: float = 0.04, sharpness_weight: float = 0.01,
                 tau_max: float = 2.0, tau_min: float = 0.5, tau_decay: float = 0.9999,
                 scale_init: float = 1.0, learn_scale: bool = True, usage_momentum: float = 0.0,
                 normalize: bool = False, gumbel_scale: float = 1.0):
        super().__init__()
        if min(dim, groups, code_dim) < 1 or codebook_size < 2:
            raise ConfigError(f"quantizer sizes must be positive with codebook_size >= 2, got dim={dim}, "
                              f"groups={groups}, codebook_size={codebook_size}, code_dim={code_dim}")
        if not 0 < tau_min <= tau_max or not 0 < tau_decay <= 1 or scale_init <= 0:
            raise ConfigError(f"need 0 < tau_min <= tau_max, 0 < tau_decay <= 1 and scale_init > 0, got "
                              f"tau_min={tau_min}, tau_max={tau_max}, tau_decay={tau_decay}, scale_init={scale_init}")
        self.dim, self.groups, self.codebook_size, self.code_dim = dim, groups, codebook_size, code_dim
        self.rate_target, self.rate_weight, self.sharpness_weight = rate_target, rate_weight, sharpness_weight
        self.tau_min, self.tau_decay = tau_min, tau_decay
        self.proj_in = nn.Linear(dim, groups * code_dim)
        # N(0, 1) entries: with s = 1 the logit gaps between codes are O(sqrt(d)) at init, so the
        # initial assignment is confident (not flat) and different inputs pick different codes.
        self.codebooks = nn.Parameter(torch.randn(groups, codebook_size, code_dim))
        log_scale = torch.tensor(math.log(scale_init), dtype=torch.float32)
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("tau", torch.tensor(float(tau_max), dtype=torch.float32))
        # Running code usage (G, V): with usage_momentum > 0 the rate is the entropy of
        # (1 - m) * p̄_batch + m * usage, so a small batch of similar frames is not forced to
        # spread over many codes to meet a rate that is a property of the whole data set.
        self.usage_momentum = usage_momentum
        # normalize: motion vectors and codes live on the unit sphere per group (cosine
        # distance), so no code wins every input just by having a small norm (collapse).
        self.normalize = normalize
        # gumbel_scale < 1 damps the sampling noise: where within-clip motion is a small part
        # of the feature variance, full-scale noise lets training rely on random codes that
        # argmax (inference) never produces; 0 gives deterministic straight-through argmax.
        self.gumbel_scale = gumbel_scale
        # Standardize the projected motion with running batch statistics first: at init the
        # features of all frames share one large common component, which would send every
        # frame to the same code (measured: 1 distinct code over 144 frames after training).
        self.standardize = nn.BatchNorm1d(groups * code_dim, affine=False, momentum=0.01) if normalize else None
        self.register_buffer("usage", torch.full((groups, codebook_size), 1.0 / codebook_size))

    @property
    def scale(self) -> Tensor:
        """The distance scale s > 0 (stored as its log)."""
        return self.log_scale.exp()

    @property
    def bits_per_frame_max(self) -> float:
        """Upper bound on the rate: every group uniform over its codebook."""
        return self.groups * math.log2(self.codebook_size)

    @torch.no_grad()
    def step_temperature(self) -> None:
        """One annealing step: tau <- max(tau_min, tau * tau_decay)."""
        self.tau.copy_(torch.clamp(self.tau * self.tau_decay, min=self.tau_min))

    def logits(self, motion: Tensor) -> Tensor:
        """(N, G*d) projected motion → (N, G, V) logits -s * ||m_i - e_ij||^2 (up to a per-row constant)."""
        m = motion.float().reshape(-1, self.groups, self.code_dim)  # (N, G, d)
        # ||m - e||^2 = ||m||^2 - 2 m.e + ||e||^2; ||m||^2 is constant over j and cancels in the softmax,
        # so it is left out (better precision at large s, no (N, G, V, d) intermediate).
        codebooks = self.code_vectors()
        if self.normalize:
            m = F.normalize(m, dim=-1)
        cross = torch.einsum("ngd,gvd->ngv", m, codebooks)  # (N, G, V)
        sq_norm = codebooks.pow(2).sum(-1)  # (G, V)
        return self.scale * (2.0 * cross - sq_norm)

    def _continuous(self, projected: Tensor) -> Tensor:
        m = projected.float().reshape(-1, self.groups, self.code_dim)
        return (F.normalize(m, dim=-1) if self.normalize else m).flatten(-2)

    def code_vectors(self) -> Tensor:
        """The (G, V, d) codebook as used: unit vectors when `normalize` is set."""
        return F.normalize(self.codebooks, dim=-1) if self.normalize else self.codebooks

    def embed_codes(self, codes: Tensor) -> Tensor:
        """(..., G) code indices → (..., G*d) codebook vectors (used to decode stored motion)."""
        if codes.shape[-1:] != (self.groups,):
            raise ValueError(f"codes must end in {self.groups} groups, got shape {tuple(codes.shape)}")
        group = torch.arange(self.groups, device=codes.device)
        vectors = self.code_vectors()[group, codes.long()]  # (..., G, d)
        return vectors.flatten(-2)

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> QuantizerOutput:
        """Quantize x (..., dim); ``generator`` drives the gumbel noise in training mode."""
        if x.shape[-1] != self.dim or x[..., 0].numel() == 0:
            raise ValueError(f"expected a non-empty input (..., {self.dim}), got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        projected = self.proj_in(x.reshape(-1, self.dim))
        if self.standardize is not None and (projected.shape[0] > 1 or not self.training):
            projected = self.standardize(projected)
        logits = self.logits(projected)  # (N, G, V)
        log_p = F.log_softmax(logits, dim=-1)
        p = log_p.exp()
        argmax = logits.argmax(-1)  # (N, G)
        if self.training:
            weights, codes = self._sample(logits, generator)  # (N, G, V) one-hot forward, soft backward
            quantized = torch.einsum("ngv,gvd->ngd", weights, self.code_vectors()).flatten(-2)  # (N, G*d)
        else:
            codes = argmax
            quantized = self.embed_codes(codes)  # (N, G*d)
        p_bar = p.mean(0)  # (G, V)
        if self.training and self.usage_momentum > 0:
            m = self.usage_momentum
            p_bar = (1 - m) * p_bar + m * self.usage
            with torch.no_grad():
                self.usage.copy_(p_bar.detach())
        bits_soft = _entropy_bits(p_bar).sum()
        per_sample = -(p * log_p).sum(-1) / math.log(2.0)  # (N, G) bits
        with torch.no_grad():
            bits_hard, distinct = _histogram_bits(argmax, self.codebook_size)
        return QuantizerOutput(
            quantized=quantized.reshape(*lead, -1), codes=codes.reshape(*lead, self.groups),
            rate_loss=self._rate_loss(bits_soft, per_sample), bits_soft=bits_soft, bits_hard=bits_hard,
            distinct=distinct, sample_entropy=per_sample.detach().mean(),
            continuous=self._continuous(projected).reshape(*lead, -1))

    def _sample(self, logits: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Straight-through gumbel-softmax: exact one-hot weights forward, soft gradient backward."""
        noise = _gumbel_noise(logits.shape, generator, logits.device) if self.gumbel_scale else 0.0
        noisy = (logits + self.gumbel_scale * noise) / self.tau
        soft = noisy.softmax(-1)  # (N, G, V)
        codes = noisy.argmax(-1)  # (N, G)
        hard = F.one_hot(codes, self.codebook_size).to(soft.dtype)
        # soft - soft.detach() is exactly zero forward, so the weights are an exact one-hot.
        return hard + (soft - soft.detach()), codes

    def _rate_loss(self, bits_soft: Tensor, per_sample_bits: Tensor) -> Tensor:
        """rate_weight * max(0, R - R_target)^2 + sharpness_weight * sum over groups of mean
        per-sample entropy.

        The paper's term is two-sided; facevid only charges a rate above the target. Measured
        (small, ~2,500 steps with R_target 48 and 96): pulled up to the target, the codes spent
        their bits on what differs *between* clips (one code per clip and group, the same for
        every frame of a clip): the cheapest entropy a batch of 4 clips offers, and no motion.

        The second term is facevid's, not the paper's. The feasibility run (facts.md) met its rate
        target (R ≈ 48) with *flat* logits: p̄ had high entropy because every p was near uniform,
        while the argmax code of every frame was the same, so the motion stream carried nothing.
        R alone cannot tell "many confident, different codes" from "one vague code"; penalising
        the per-sample entropy pushes each assignment to be confident, so R must then be paid
        for with genuinely different codes.
        """
        rate_term = self.rate_weight * F.relu(bits_soft - self.rate_target) ** 2
        return rate_term + self.sharpness_weight * per_sample_bits.mean(0).sum()

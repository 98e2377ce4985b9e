"""Model and training configuration: frozen dataclasses, the PRESETS dict, a strict TOML loader."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import tomllib

from facevid.errors import ConfigError

# where transfer (and eval's "model") takes the warp's landmark motion from: "landmarks" (the
# tracker's 68 dlib points), "keypoints" (KeypointNet) or "codes" (measured: docs/decisions.md)
DEFAULT_MOTION = "landmarks"
# the largest side of the face crop transfer renders at (the source's own pixels up to this)
RENDER_SIZE = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the BCD model (seed 001) as facevid builds it: encoder, group VQ,
    landmark-driven warp, DiT denoiser with temporal attention."""

    # geometry
    out_size: int = 128             # crop side the model outputs (the warp runs at this size)
    net_size: int = 64              # side at which keypoint net and denoiser run
    enc_size: int = 128             # side the encoder sees (motion is ~1 px at 64: it needs the detail)
    crop_margin: float = 0.5        # the face crop the model was trained on (CropSpec.margin)
    crop_center_y: float = 0.4      # ... and its vertical centre (CropSpec.center_y)
    # encoder: per-frame conv stem, then a transformer over time
    enc_channels: tuple[int, ...] = (32, 64, 128)  # stem widths: a 4x4 patchify, then each stage halves the side
    enc_dim: int = 256              # transformer width
    enc_layers: int = 4             # transformer blocks
    enc_heads: int = 4              # attention heads
    frame_tokens: int = 4           # tokens per frame (a square number: 2x2 pooled stem features)
    content_tokens: int = 4         # K learnable content queries
    rel_buckets: int = 32           # T5 relative position buckets (over frame distance)
    rel_max_distance: int = 128     # frames beyond which buckets saturate
    # bitrate-controlled group VQ
    vq_groups: int = 24             # G
    vq_codebook: int = 32           # V codes per group
    vq_code_dim: int = 8            # d
    rate_target: float = 96.0       # R_target, bits per frame (lower keeps identity out of motion; the
                                    # dense motion of the whole crop needs more than landmarks: 48 used ~30)
    rate_weight: float = 0.04       # λ of the rate loss
    tau_max: float = 1.0            # gumbel-softmax temperature at the start
    tau_min: float = 0.3            # ... annealed down to this
    vq_sharpness: float = 0.02      # weight of the per-sample code entropy (bits) in the rate loss
    vq_scale_init: float = 4.0      # initial distance scale s (logits span ±2s on the unit sphere)
    vq_usage_momentum: float = 0.9  # rate measured on a running code histogram (many batches)
    vq_normalize: bool = True       # codes and motion on the unit sphere per group (no collapse)
    vq_gumbel_scale: float = 0.0    # gumbel noise scale in training; 0 = straight-through argmax (measured:
                                    # distinct codes on 144 unseen frames, tiny, 200 steps: 1.0 → 1-3, 0 → 11)
    tau_decay: float = 0.9995       # multiplied in every step
    # keypoints and warp
    keypoints: int = 68             # landmark layout of the supervision (iBUG 68)
    flow_size: int = 32             # side at which the TPS warp and flow U-Net run (upsampled to out_size)
    flow_channels: tuple[int, ...] = (32, 64, 128)   # flow U-Net widths
    flow_input: int = 0             # side of the measured optical flow (frame → reference, Farnebäck) whose
                                    # linear map joins the motion features; 0: none (models before it).
                                    # Held-out oracle warps with that flow: 16² 26.0 dB, 8² 25.4, copy 20.0
    flow_code: int = 0              # C: the motion stream also carries the measured flow (flow_input side)
                                    # as C principal components (fitted on the training data) at
                                    # flow_code_bits each, and the warp starts from that flow; 0: off (the
                                    # coarse flow head instead). Held-out oracle, reference warped by the
                                    # quantized flow: C=32 at 5 bits 23.7 dB (16: 23.0, 48: 24.1), copy 20.0
    flow_code_bits: int = 5         # uniform levels over ±3 standard deviations of each component
    coarse_flow: int = 8            # side of the dense flow a linear head reads off the motion-code change
                                    # (head pose, hair, shoulders, background move: TPS on landmarks alone
                                    # reaches +0.7 dB over copying the reference, a 16x16 true flow +6 dB)
    # denoiser (DiT, EDM)
    dit_dim: int = 256              # width
    dit_layers: int = 6             # spatial blocks
    dit_heads: int = 4
    dit_patch: int = 8              # patch side on the net_size input
    temporal_every: int = 2         # a temporal attention block after spatial blocks 0, k, 2k, ...
    head_channels: int = 16         # full-resolution conv head after unpatchify
    sigma_data: float = 0.25        # EDM σ_data of the residual (target − warped reference) being diffused
    sample_sigma_max: float = 2.0   # the sampler starts here (the warped reference already fixes the layout)
    sample_steps: int = 6           # default sampler steps
    cond_dropout: float = 0.1       # classifier-free guidance: drop motion/content this often
    # mouth refiner (facevid.model.mouth): trained after the rest (`facevid train-mouth`); 0: none
    mouth_size: int = 0             # side of the mouth window it runs at (a mouth spans ~1/5 of out_size)
    mouth_channels: tuple[int, ...] = (16, 32, 64, 128)   # its U-Net widths

    def __post_init__(self):
        if self.net_size % self.dit_patch or self.out_size % self.net_size:
            raise ConfigError("net_size must be a multiple of dit_patch and out_size a multiple of net_size")
        if int(self.frame_tokens ** 0.5) ** 2 != self.frame_tokens:
            raise ConfigError("frame_tokens must be a square number")
        if self.enc_size % (4 * 2 ** (len(self.enc_channels) - 1)):
            raise ConfigError("enc_size must be divisible by 4 * 2**(len(enc_channels) - 1)")
        if self.flow_code and not 0 < self.flow_code <= 2 * self.flow_input ** 2:
            raise ConfigError("flow_code needs flow_input > 0 and at most 2 * flow_input**2 components")
        if self.flow_code and not 1 <= self.flow_code_bits <= 16:
            raise ConfigError("flow_code_bits must be between 1 and 16")

    @property
    def motion_dim(self) -> int:
        return self.vq_groups * self.vq_code_dim

    @property
    def bits_per_frame(self) -> int:
        """What the motion stream stores per frame: G codes of log2 V bits (whole bits) and C flow levels."""
        return self.vq_groups * max(1, (self.vq_codebook - 1).bit_length()) + self.flow_code * self.flow_code_bits


PRESETS: dict[str, ModelConfig] = {
    # tests: runs in seconds
    "tiny": ModelConfig(out_size=32, net_size=32, enc_size=32, flow_size=16, enc_channels=(16, 32), enc_dim=32, enc_layers=1, enc_heads=2,
                        content_tokens=2, rel_buckets=8, rel_max_distance=16, vq_groups=4, vq_codebook=8,
                        vq_code_dim=4, rate_target=8.0, flow_channels=(8, 16), coarse_flow=4, flow_input=8,
                        flow_code=16, flow_code_bits=4,
                        dit_dim=32, dit_layers=2,
                        dit_heads=2, dit_patch=8, head_channels=8),
    # the bundled model: trainable on a 2-core CPU in hours
    # (1 sampler step, the denoiser's posterior mean: on CPU-trained denoisers more steps add noise;
    # motion stream 24 x 5 bits of codes + 32 x 5 bits of flow = 280 bits a frame)
    "small": ModelConfig(flow_input=16, flow_code=32, flow_code_bits=5, sample_steps=1),
    # the seed's talking-head sizes (Tab. A7: G=64, V=32, d=16, 160 bits/frame) for GPU users
    "paper": ModelConfig(out_size=256, net_size=128, enc_size=256, flow_size=64, enc_channels=(64, 128, 256, 512), enc_dim=768,
                         enc_layers=12, enc_heads=12, frame_tokens=16, content_tokens=16, vq_groups=64,
                         vq_codebook=32, vq_code_dim=16, rate_target=160.0, vq_gumbel_scale=1.0, flow_channels=(64, 128, 256, 512),
                         flow_input=16,
                         dit_dim=768, dit_layers=12, dit_heads=12, dit_patch=8, head_channels=64),
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (`facevid train`); a TOML file maps 1:1 onto these fields."""

    preset: str = "small"           # key of PRESETS
    clips_per_batch: int = 4        # B
    content_frames: int = 6         # frames of half A (content)
    target_frames: int = 6          # frames of half B (motion, reconstructed)
    strides: tuple[int, ...] = (1, 2, 4, 8)   # frame strides of a window, drawn uniformly among those that
                                    # fit the clip: at 8 the reference and target are up to 3.5 s apart, as in
                                    # evaluation and transfer (reference = first frame); (1, 2) only reached 0.9 s
    flip_prob: float = 0.5          # horizontal flip augmentation
    synthetic_prob: float = 0.0     # share of batches of synthetic heads
    lr_encoder: float = 2e-4        # AdamW learning rates per module (paper: per-module rates)
    lr_decoder: float = 2e-4
    lr_quantizer: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss_warp: float = 1.0          # L1 of the warped reference against the target
    loss_diffusion: float = 1.0     # EDM loss
    loss_landmarks: float = 1.0     # motion codes → landmark displacement (L1 in net_size pixels)
    loss_keypoints: float = 0.5     # keypoint net → landmarks of the reference (L1 in net_size pixels)
    loss_flow: float = 1.0          # warp flow → optical flow target → reference (L1 in net_size pixels)
    loss_correspondence: float = 0.3   # final warp → true target landmarks onto the reference's (L1, pixels;
                                       # why 0.3: docs/decisions.md)
    teacher_forcing: float = 0.5    # share of clips whose warp uses the true target landmarks
    sigma_max_share: float = 0.2    # share of denoiser training frames at the sampler's σ_max (the 1-step mean)
    pin_share: float = 0.0          # share of the teacher-forced clips whose flow is pinned to their landmarks
                                    # (the warps transfer between people makes: mouths opened by stretching)
    mouth_weight: float = 1.0       # the diffusion loss's weight on the pixels of the mouth (its landmarks' box,
                                    # padded), where warping cannot show what opening the mouth reveals
    max_steps: int = 1_000_000
    max_minutes: float = 0.0        # 0: no time limit
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    sample_every: int = 500         # PNG grid of reconstructions / cross transfers
    eval_identities: tuple[str, ...] = ()   # identities held out (never trained on)
    seed: int = 0
    threads: int = 0                # torch threads (0: leave torch's default)
    device: str = "cpu"

    def model_config(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset '{self.preset}' (choose from {', '.join(PRESETS)})")
        return PRESETS[self.preset]


def from_dict(cls, values: dict, where: str = "config"):
    """Build a frozen config dataclass; unknown keys fail (nanoGPT-style)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown {where} key(s): {', '.join(unknown)} (valid: {', '.join(names)})")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**fixed)
    except TypeError as error:
        raise ConfigError(f"bad {where}: {error}") from error


def load_train_config(path: str | Path | None, **overrides) -> TrainConfig:
    """TrainConfig from a TOML file (optional) with keyword overrides on top."""
    values: dict = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read training config {path}: {error}") from error
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(TrainConfig, values, "training config")


def model_config_to_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)


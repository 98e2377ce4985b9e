"""FaceVid: the BCD model (seed 001) as facevid builds it for CPUs.

encoder → content (K tokens) + motion features, plus linear maps of KeypointNet's landmark
  change and of the measured optical flow since the reference → group VQ (bitrate-controlled codes) →
  keypoints: reference landmarks (KeypointNet) + a linear map of the motion-code change
  → thin-plate-spline warp of the reference + a coarse dense flow (another linear map of
    the code change), refined by FlowNet (residual flow, occlusion); trained against the
    landmarks and the optical flow of each training frame
  → EDM DiT denoiser at net_size conditioned on the warped reference, the motion (adaLN)
    and the content tokens (concatenated) generates the residual target − warped
    reference: what warping cannot show (mouth interior, eyelids, shading)
  → output at out_size = warped reference + the residual upsampled. `steps=0` gives the
    warp alone, `steps=1` the denoiser's posterior mean (one call, deterministic), more
    steps the EDM sampler (sharper generated detail, noise where the denoiser is weak).
The linear landmark head makes motion composable: a driver's change of codes maps to a
change of landmarks on any face (relative transfer), and the codes cannot collapse to
"copy the reference" because they must predict the landmark displacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facevid.config import ModelConfig
from facevid.model.decoder import DiT
from facevid.model.encoder import Encoder, KeypointNet
from facevid.model.quantize import GroupQuantizer, QuantizerOutput
from facevid.model.warp import FlowNet, border_anchors, grid_to_flow, tps_grid, warp_image
from facevid.sampling import Denoiser, guided, karras_sigmas, sample, sample_training_sigmas


@dataclass
class Encoded:
    content: torch.Tensor        # (B, K, E)
    motion: torch.Tensor         # (B, T, G*d) quantized code vectors
    codes: torch.Tensor          # (B, T, G) code indices
    quant: QuantizerOutput
    points: torch.Tensor         # (B, T, K, 2) KeypointNet's landmarks of the frames (the encoder's input)


@dataclass
class Warped:
    out: torch.Tensor            # (N, 3, S, S) reference warped at output resolution
    net: torch.Tensor            # (N, 3, n, n) ... at network resolution
    occlusion: torch.Tensor      # (N, 1, n, n) 1 = visible in the reference
    grid: torch.Tensor           # (N, f, f, 2) the final backward grid at flow_size
    base: torch.Tensor           # (N, f, f, 2) ... before FlowNet: TPS on the keypoints + the coarse flow
    tps: torch.Tensor            # (N, f, f, 2) ... the TPS alone


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average down (or bilinear up) a (N, C, H, W) batch to size x size."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def measured_flow(frames: torch.Tensor, reference: torch.Tensor, size: int) -> torch.Tensor:
    """Farnebäck optical flow (facevid.data.optical_flow) of frames (B, T, 3, H, W) to the
    reference (B, 3, H, W), both in [-1, 1]: (B, T, 2, size, size) backward flow in normalised
    units, no gradient. The same measurement as the warp's training target."""
    from facevid.data import optical_flow

    def uint8(x):
        return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).cpu().numpy()

    refs, clips = uint8(reference), uint8(frames)
    flows = np.stack([optical_flow(ref, clip, size) for ref, clip in zip(refs, clips)])
    return torch.from_numpy(flows).to(frames.device)


class FaceVid(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = GroupQuantizer(dim=cfg.enc_dim, groups=cfg.vq_groups, codebook_size=cfg.vq_codebook,
                                        code_dim=cfg.vq_code_dim, rate_target=cfg.rate_target,
                                        rate_weight=cfg.rate_weight, sharpness_weight=cfg.vq_sharpness,
                                        tau_max=cfg.tau_max, tau_min=cfg.tau_min, tau_decay=cfg.tau_decay,
                                        scale_init=cfg.vq_scale_init, usage_momentum=cfg.vq_usage_momentum,
                                        normalize=cfg.vq_normalize, gumbel_scale=cfg.vq_gumbel_scale)
        self.landmark_head = nn.Linear(cfg.motion_dim, cfg.keypoints * 2, bias=False)
        nn.init.zeros_(self.landmark_head.weight)   # start from "no motion": the warp copies the reference
        self.flow_head = nn.Linear(cfg.motion_dim, 2 * cfg.coarse_flow ** 2, bias=False)
        nn.init.zeros_(self.flow_head.weight)
        self.keypoint_net = KeypointNet(cfg.keypoints)
        self.keypoint_in = nn.Linear(2 * cfg.keypoints, cfg.enc_dim)   # keypoint change → motion feature
        nn.init.zeros_(self.keypoint_in.weight)
        nn.init.zeros_(self.keypoint_in.bias)
        if cfg.flow_input:   # measured optical flow → motion feature
            self.flow_in = nn.Linear(2 * cfg.flow_input ** 2, cfg.enc_dim)
            nn.init.zeros_(self.flow_in.weight)
            nn.init.zeros_(self.flow_in.bias)
        self.flow_cond = nn.Sequential(nn.Linear(2 * cfg.motion_dim, 128), nn.SiLU(), nn.Linear(128, 128))
        self.flow_net = FlowNet(in_channels=3, cond_dim=128, channels=cfg.flow_channels,
                                heatmap_points=cfg.keypoints)
        self.dit = DiT(cfg)
        self.register_buffer("anchors", border_anchors(), persistent=False)

    @property
    def denoiser(self) -> Denoiser:
        """The EDM-preconditioned DiT (built on demand so the weights are held once)."""
        return Denoiser(self.dit, sigma_data=self.cfg.sigma_data)

    # ------------------------------------------------------------------ encoding

    def encode(self, frames: torch.Tensor, reference: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> Encoded:
        """frames (B, T, 3, H, W) in [-1, 1] (crops at out_size), motion relative to `reference`
        (B, 3, H, W; default: each clip's first frame) → content, quantized motion, codes."""
        content, features, points = self._encoder(frames, frames[:, 0] if reference is None else reference)
        quant = self.quantizer(features, generator=generator)
        return Encoded(content, quant.quantized, quant.codes, quant, points)

    def _encoder(self, frames: torch.Tensor, reference: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder on frames and reference resized to enc_size: content (B, K, E), features
        (B, T, E), plus a linear map of the keypoint change since the reference (KeypointNet,
        not trained by it); and those keypoints (B, T, K, 2). Measured before (small, held-out): the encoder's own codes moved the
        landmarks no closer to the real ones than copying the reference (AKD 0.060 vs 0.059),
        while KeypointNet's change did (0.048)."""
        b, t = frames.shape[:2]
        cfg = self.cfg
        size = cfg.enc_size
        content, features = self.encoder(resize(frames.flatten(0, 1), size).view(b, t, 3, size, size),
                                         resize(reference, size))
        with torch.no_grad():
            points = self.keypoints(torch.cat([reference, frames.flatten(0, 1)])).float()
        ref_points, points = points[:b], points[b:].view(b, t, *points.shape[1:])
        change = (points - ref_points[:, None]).flatten(2) * (cfg.net_size / 2)   # pixels at net_size
        features = features + self.keypoint_in(change)
        if cfg.flow_input:
            flow = measured_flow(frames, reference, cfg.flow_input).flatten(2) * (cfg.net_size / 2)
            features = features + self.flow_in(flow.to(features.dtype))
        return content, features, points

    def encode_halves(self, first: torch.Tensor, second: torch.Tensor, reference: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[Encoded, Encoded]:
        """Encode two windows of the same clips relative to one reference, quantizing them
        together: the quantizer's batch standardization must see one set of statistics, or the
        motion change between the windows picks up the difference of their batch means."""
        outputs = [self._encoder(x, reference) for x in (first, second)]
        ta = first.shape[1]
        quant = self.quantizer(torch.cat([outputs[0][1], outputs[1][1]], dim=1), generator=generator)
        halves = []
        for (content, _, points), part in zip(outputs, (slice(0, ta), slice(ta, None))):
            q = replace(quant, quantized=quant.quantized[:, part], codes=quant.codes[:, part],
                        continuous=quant.continuous[:, part])
            halves.append(Encoded(content, q.quantized, q.codes, q, points))
        return halves[0], halves[1]

    def motion_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.embed_codes(codes)

    def displacement(self, motion: torch.Tensor, ref_motion: torch.Tensor) -> torch.Tensor:
        """Landmark displacement (B, T, K, 2) from the reference's motion to each frame's."""
        b, t = motion.shape[:2]
        return self.landmark_head(motion - ref_motion[:, None]).view(b, t, self.cfg.keypoints, 2)

    def coarse_flow(self, motion: torch.Tensor, ref_motion: torch.Tensor) -> torch.Tensor:
        """Dense flow (B, T, 2, c, c) read linearly off the motion-code change (like the landmarks:
        a driver's change of codes is a change of flow on any face)."""
        b, t = motion.shape[:2]
        c = self.cfg.coarse_flow
        return self.flow_head(motion - ref_motion[:, None]).view(b, t, 2, c, c)

    def keypoints(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) → (N, K, 2) landmarks in [-1, 1] (runs at net_size)."""
        return self.keypoint_net(resize(image, self.cfg.net_size))

    # ------------------------------------------------------------------ decoding

    def warp(self, reference: torch.Tensor, ref_points: torch.Tensor, target_points: torch.Tensor,
             ref_motion: torch.Tensor, motion: torch.Tensor) -> Warped:
        """Warp each clip's reference (B, 3, S, S) to every target frame's keypoints (B, T, K, 2)."""
        b, t = target_points.shape[:2]
        cfg = self.cfg
        ref_out = reference.repeat_interleave(t, 0)                              # (N, 3, S, S)
        ref_net = resize(ref_out, cfg.net_size)
        src = ref_points.repeat_interleave(t, 0)                                 # (N, K, 2)
        dst = target_points.flatten(0, 1)
        tps = tps_grid(src, dst, cfg.flow_size, cfg.flow_size, anchors=self.anchors)
        base = tps + resize(self.coarse_flow(motion, ref_motion).flatten(0, 1), cfg.flow_size).permute(0, 2, 3, 1)
        # the absolute codes may tell the flow net about the face, but only the change is trained by it
        cond = self.flow_cond(torch.cat([motion - ref_motion[:, None], motion.detach()], -1).flatten(0, 1))
        grid, occlusion = self.flow_net(resize(ref_net, cfg.flow_size), base, src, dst, cond)
        occlusion = resize(occlusion, cfg.net_size)
        return Warped(warp_image(ref_out, grid), warp_image(ref_net, grid), occlusion, grid, base, tps)

    def _conditions(self, warped: Warped, motion: torch.Tensor, content: torch.Tensor, frames: int):
        # the diffusion loss trains the occlusion mask but not the warp (the warp loss does)
        shared = {"warped": torch.cat([warped.net.detach(), warped.occlusion], 1), "frames": frames}
        content = content.repeat_interleave(frames, 0)                           # (N, K, E)
        # the denoiser reads the motion codes but does not shape them: trained by it, codes
        # learned to carry what helps generate a clip's look (its person) instead of its motion
        cond = {"motion": motion.flatten(0, 1).detach(), "content": content}
        uncond = {"motion": self.dit.null_motion.expand_as(cond["motion"]),
                  "content": self.dit.null_content.expand_as(content)}
        return shared, cond, uncond

    def compose(self, warped: Warped, residual: torch.Tensor) -> torch.Tensor:
        """Output at out_size: the sharp warped reference plus the denoised residual
        (what warping cannot show), upsampled from net_size."""
        return (warped.out + resize(residual, self.cfg.out_size)).clamp(-1, 1)

    @torch.no_grad()
    def decode(self, reference: torch.Tensor, ref_points: torch.Tensor, ref_motion: torch.Tensor,
               motion: torch.Tensor, content: torch.Tensor, *, steps: int = 6, guidance: float = 1.0,
               generator: torch.Generator | None = None, target_points: torch.Tensor | None = None,
               sigma_max: float | None = None) -> torch.Tensor:
        """Frames (B, T, 3, S, S) for motion (B, T, G*d) on each clip's reference.

        `target_points` overrides the keypoints the motion implies (relative transfer);
        `steps=0` returns the warped reference, `steps=1` adds the posterior-mean residual."""
        b, t = motion.shape[:2]
        if target_points is None:
            target_points = ref_points[:, None] + self.displacement(motion, ref_motion)
        warped = self.warp(reference, ref_points, target_points, ref_motion, motion)
        if steps == 0:   # the warp alone (fastest; no generated mouth interior)
            return warped.out.clamp(-1, 1).view(b, t, 3, self.cfg.out_size, self.cfg.out_size)
        shared, cond, uncond = self._conditions(warped, motion, content, t)
        n = self.cfg.net_size
        sigma_max = sigma_max or self.cfg.sample_sigma_max
        denoise = guided(self.denoiser, guidance, cond, uncond)
        if steps == 1:   # posterior mean E[residual | conditions]: one call, no noise
            zeros = torch.zeros((b * t, 3, n, n), device=reference.device)
            residual = denoise(zeros, torch.full((b * t,), sigma_max, device=reference.device), **shared)
        else:
            noise = torch.randn((b * t, 3, n, n), generator=generator, device=reference.device)
            sigmas = karras_sigmas(steps, sigma_max=sigma_max, device=reference.device)
            residual = sample(denoise, noise, sigmas, cond=shared)
        return self.compose(warped, residual).view(b, t, 3, self.cfg.out_size, self.cfg.out_size)

    # ------------------------------------------------------------------ training

    def training_losses(self, batch: dict, generator: torch.Generator | None = None, *,
                        teacher_forcing: float = 0.0, sigma_max_share: float = 0.0) -> tuple[dict, dict]:
        """Cross-driven losses (content from half A, motion from half B, reconstruct B).

        With probability `teacher_forcing` per clip the warp is driven by the true target
        landmarks instead of the codes' prediction, so the flow net and denoiser learn from
        correct motion while the landmark head is still poor (measured: a flow net trained
        only on predicted motion made the warp with true landmarks 0.6 dB worse than TPS).
        `sigma_max_share` of the noise levels are the sampler's σ_max."""
        cfg = self.cfg
        content_frames, target = batch["content"], batch["target"]              # (B,Ta,3,S,S), (B,Tb,3,S,S)
        b, tb = target.shape[:2]
        target_net = resize(target.flatten(0, 1), cfg.net_size)                  # (N, 3, n, n)
        enc_a, enc_b = self.encode_halves(content_frames, target, batch["reference"], generator)
        ref_motion = enc_a.motion[torch.arange(b), batch["ref_index"]]           # (B, M)
        ref_points = batch["ref_landmarks"]
        disp_b = self.displacement(enc_b.motion, ref_motion)
        disp_a = self.displacement(enc_a.motion, ref_motion)
        pixels = cfg.net_size / 2   # landmark losses in pixels at net_size (coordinates span 2)
        true_b = batch["target_landmarks"] - ref_points[:, None]
        true_a = batch["content_landmarks"] - ref_points[:, None]
        loss_landmarks = pixels * ((disp_b - true_b).abs().mean() + (disp_a - true_a).abs().mean()) / 2
        # The same head on the continuous motion before quantization: a direct gradient that
        # organises the encoder's features by motion, which the codes then inherit (through
        # the quantizer alone, tiny models' codes explained ~1% of unseen landmark motion).
        cont_a, cont_b = enc_a.quant.continuous, enc_b.quant.continuous
        cont_ref = cont_a[torch.arange(b), batch["ref_index"]]
        loss_landmarks = loss_landmarks + pixels * (
            (self.displacement(cont_b, cont_ref) - true_b).abs().mean()
            + (self.displacement(cont_a, cont_ref) - true_a).abs().mean()) / 2
        reference_net = resize(batch["reference"], cfg.net_size)
        kp_pred = self.keypoint_net(torch.cat([reference_net, target_net[::tb], target_net[tb - 1::tb]]))
        kp_true = torch.cat([ref_points, batch["target_landmarks"][:, 0], batch["target_landmarks"][:, -1]])
        loss_keypoints = pixels * (kp_pred - kp_true).abs().mean()

        target_points = ref_points[:, None] + disp_b
        if teacher_forcing > 0:
            forced = torch.rand(b, generator=generator, device=target.device) < teacher_forcing
            target_points = torch.where(forced[:, None, None, None], batch["target_landmarks"], target_points)
        warped = self.warp(batch["reference"], ref_points, target_points, ref_motion, enc_b.motion)
        target_flat = target.flatten(0, 1)
        loss_warp = (warped.out - target_flat).abs().mean()
        # the final warp must carry each true target landmark back to the reference's (dlib's
        # geometry, which AKD and the motion error measure): the backward grid sampled there
        at = F.grid_sample(warped.grid.permute(0, 3, 1, 2), batch["target_landmarks"].flatten(0, 1)[:, :, None],
                           mode="bilinear", padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)
        loss_correspondence = pixels * (at - ref_points.repeat_interleave(tb, 0)).abs().mean()
        loss_flow = target.new_zeros(())
        if "target_flow" in batch:   # optical flow target → reference, (B, Tb, 2, F, F) normalised
            true_flow = batch["target_flow"].flatten(0, 1)
            size = true_flow.shape[-1]

            def flow_error(grid):
                return pixels * (resize(grid_to_flow(grid), size) - true_flow).abs().mean()

            # the final grid, the coarse flow from the codes and (direct gradient, as for the
            # landmarks) from the continuous motion, each on top of the TPS
            cont_flow = resize(self.coarse_flow(cont_b, cont_ref).flatten(0, 1), cfg.flow_size)
            loss_flow = (flow_error(warped.grid) + flow_error(warped.base)
                         + flow_error(warped.tps + cont_flow.permute(0, 2, 3, 1))) / 3

        shared, cond, uncond = self._conditions(warped, enc_b.motion, enc_a.content, tb)
        drop = torch.rand(b, generator=generator, device=target.device) < cfg.cond_dropout
        drop = drop.repeat_interleave(tb)
        for key in cond:
            mask = drop.view(-1, *([1] * (cond[key].dim() - 1)))
            cond[key] = torch.where(mask, uncond[key], cond[key])
        # σ ~ lognormal as in EDM, shifted to the residual's scale (P_mean -1.2 at σ_data 0.5)
        sigma = sample_training_sigmas(b * tb, p_mean=-1.2 + math.log(cfg.sigma_data / 0.5), generator=generator,
                                       device=target.device)
        # ... and a share at the sampler's first level, where lognormal draws almost never land
        # (ln 2 is 2.2 std above the mean) but the 1-step posterior mean and every sample start
        at_max = torch.rand(b * tb, generator=generator, device=target.device) < sigma_max_share
        sigma = torch.where(at_max, torch.full_like(sigma, cfg.sample_sigma_max), sigma)
        noise = torch.randn(target_net.shape, generator=generator, device=target.device)
        residual = target_net - warped.net.detach()
        loss_diffusion = self.denoiser.loss(residual, noise, sigma, **shared, **cond).mean()
        rate = enc_a.quant.rate_loss   # shared by both halves (quantized together)
        losses = {"warp": loss_warp, "flow": loss_flow, "correspondence": loss_correspondence,
                  "diffusion": loss_diffusion, "landmarks": loss_landmarks, "keypoints": loss_keypoints, "rate": rate}
        with torch.no_grad():
            mse = ((warped.out - target_flat) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
            copy = ((batch["reference"].repeat_interleave(tb, 0) - target_flat) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
            still = (batch["target_landmarks"] - ref_points[:, None]).abs().mean() * pixels
            metrics = {"warp_psnr": (10 * torch.log10(4.0 / mse)).mean().item(),
                       "copy_psnr": (10 * torch.log10(4.0 / copy)).mean().item(),
                       "landmarks_still": still.item(),
                       "bits_soft": enc_b.quant.bits_soft.item(), "bits_hard": enc_b.quant.bits_hard.item(),
                       "codes_min": enc_b.quant.distinct.min().item(),
                       "codes_mean": enc_b.quant.distinct.float().mean().item(),
                       "tau": float(self.quantizer.tau)}
        return losses, metrics

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
    steps the EDM sampler (sharper generated detail, noise where the denoiser is weak)
  → the mouth refiner (model/mouth.py, if the weights have one) repaints a window around
    the target mouth at the mouth's own scale: the cavity and teeth of an opened mouth.
The linear landmark head makes motion composable: a driver's change of codes maps to a
change of landmarks on any face (relative transfer), and the codes cannot collapse to
"copy the reference" because they must predict the landmark displacement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from facevid.config import ModelConfig
from facevid.face.landmarks import EYES_AND_MOUTH
from facevid.model.decoder import DiT
from facevid.model.encoder import Encoder, KeypointNet
from facevid.model.flow_code import FlowCode, measured_flow, renamed
from facevid.model.mouth import MouthRefiner
from facevid.model.quantize import GroupQuantizer, QuantizerOutput
from facevid.model.warp import FlowNet, border_anchors, flow_to_grid, grid_to_flow, sample_grid, tps_grid, warp_image
from facevid.sampling import Denoiser, check_sampler, guided, karras_sigmas, sample, scheduler_sample


@dataclass
class Encoded:
    content: torch.Tensor        # (B, K, E)
    motion: torch.Tensor         # (B, T, G*d [+ C]) quantized code vectors [+ dequantized flow components]
    codes: torch.Tensor          # (B, T, G [+ C]) code indices [+ flow levels]
    quant: QuantizerOutput
    points: torch.Tensor         # (B, T, K, 2) KeypointNet's landmarks of the frames (the encoder's input)


@dataclass
class Warped:
    out: torch.Tensor            # (N, 3, S, S) reference warped at output resolution
    net: torch.Tensor            # (N, 3, n, n) ... at network resolution
    occlusion: torch.Tensor      # (N, 1, n, n) 1 = visible in the reference
    grid: torch.Tensor           # (N, f, f, 2) the final backward grid at flow_size
    base: torch.Tensor           # (N, f, f, 2) ... before FlowNet: `start` + the coarse flow
    start: torch.Tensor          # (N, f, f, 2) ... TPS on the keypoints, or the flow code's flow


OWN_FACE_PINS = EYES_AND_MOUTH   # where a face driven by its own landmarks is pinned to them


def region_mask(points: torch.Tensor, size: int, pad: float = 0.0) -> torch.Tensor:
    """(N, size, size) 1 inside the box of each set of points (N, K, 2) in [-1, 1] coordinates,
    padded by `pad` on each side, 0 outside."""
    centres = (torch.arange(size, device=points.device, dtype=points.dtype) * 2 + 1) / size - 1
    low, high = points.amin(1) - pad, points.amax(1) + pad                     # (N, 2)
    inside_x = (centres[None] >= low[:, :1]) & (centres[None] <= high[:, :1])    # (N, size)
    inside_y = (centres[None] >= low[:, 1:]) & (centres[None] <= high[:, 1:])
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(points.dtype)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average down (or bilinear up) a (N, C, H, W) batch to size x size."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


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
        self.mouth = MouthRefiner(cfg.mouth_size, cfg.mouth_channels) if cfg.mouth_size else None
        self.register_buffer("anchors", border_anchors(), persistent=False)
        # the measured flow's principal components, quantized (model/flow_code.py)
        self.flow_code = FlowCode(cfg.flow_input, cfg.flow_code, cfg.flow_code_bits) if cfg.flow_code else None
        self._register_load_state_dict_pre_hook(lambda state, prefix, *_: renamed(state, prefix))

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.parameters()).device

    @property
    def denoiser(self) -> Denoiser:
        """The EDM-preconditioned DiT (built on demand so the weights are held once)."""
        return Denoiser(self.dit, sigma_data=self.cfg.sigma_data)

    # ------------------------------------------------------------------ encoding

    def encode(self, frames: torch.Tensor, reference: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> Encoded:
        """frames (B, T, 3, H, W) in [-1, 1] (crops at out_size), motion relative to `reference`
        (B, 3, H, W; default: each clip's first frame) → content, quantized motion, codes."""
        content, features, points, flow = self._encoder(frames, frames[:, 0] if reference is None else reference)
        quant = self.quantizer(features, generator=generator)
        motion, codes = self._with_flow_code(quant.quantized, quant.codes, flow)
        return Encoded(content, motion, codes, quant, points)

    def _with_flow_code(self, motion: torch.Tensor, codes: torch.Tensor, flow: torch.Tensor | None):
        """Append the quantized flow's components to the motion vectors and its levels to the codes."""
        if not self.cfg.flow_code:
            return motion, codes
        levels = self.flow_code.quantize(flow)
        return torch.cat([motion, self.flow_code.dequantize(levels).to(motion.dtype)], -1), torch.cat([codes, levels], -1)

    def _encoder(self, frames: torch.Tensor, reference: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The encoder on frames and reference resized to enc_size: content (B, K, E), features
        (B, T, E), plus a linear map of the keypoint change since the reference (KeypointNet,
        not trained by it); those keypoints (B, T, K, 2); the measured flow (B, T, 2, f, f) at
        flow_input (None without). Measured before (small, held-out): the encoder's own codes moved the
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
        flow = None
        if cfg.flow_input:
            flow = measured_flow(frames, reference, cfg.flow_input)
            features = features + self.flow_in((flow.flatten(2) * (cfg.net_size / 2)).to(features.dtype))
        return content, features, points, flow

    def encode_halves(self, first: torch.Tensor, second: torch.Tensor, reference: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[Encoded, Encoded]:
        """Encode two windows of the same clips relative to one reference, quantizing them
        together: the quantizer's batch standardization must see one set of statistics, or the
        motion change between the windows picks up the difference of their batch means."""
        outputs = [self._encoder(x, reference) for x in (first, second)]
        ta = first.shape[1]
        quant = self.quantizer(torch.cat([outputs[0][1], outputs[1][1]], dim=1), generator=generator)
        halves = []
        for (content, _, points, flow), part in zip(outputs, (slice(0, ta), slice(ta, None))):
            q = replace(quant, quantized=quant.quantized[:, part], codes=quant.codes[:, part],
                        continuous=quant.continuous[:, part])
            motion, codes = self._with_flow_code(q.quantized, q.codes, flow)
            halves.append(Encoded(content, motion, codes, q, points))
        return halves[0], halves[1]

    def motion_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Stored codes (..., G [+ C]) → motion vectors (..., G*d [+ C])."""
        g = self.cfg.vq_groups
        motion = self.quantizer.embed_codes(codes[..., :g])
        if not self.cfg.flow_code:
            return motion
        return torch.cat([motion, self.flow_code.dequantize(codes[..., g:]).to(motion.dtype)], -1)

    def _vq(self, motion: torch.Tensor) -> torch.Tensor:
        """The code vectors of a motion tensor (without the flow components)."""
        return motion[..., :self.cfg.motion_dim]

    def displacement(self, motion: torch.Tensor, ref_motion: torch.Tensor) -> torch.Tensor:
        """Landmark displacement (B, T, K, 2) from the reference's motion to each frame's."""
        b, t = motion.shape[:2]
        change = self._vq(motion) - self._vq(ref_motion)[:, None]
        return self.landmark_head(change).view(b, t, self.cfg.keypoints, 2)

    def coarse_flow(self, motion: torch.Tensor, ref_motion: torch.Tensor) -> torch.Tensor:
        """Dense flow (B, T, 2, c, c) read linearly off the motion-code change (like the landmarks:
        a driver's change of codes is a change of flow on any face)."""
        b, t = motion.shape[:2]
        c = self.cfg.coarse_flow
        return self.flow_head(self._vq(motion) - self._vq(ref_motion)[:, None]).view(b, t, 2, c, c)

    @property
    def flow_code_fitted(self) -> bool:
        """The flow code's components were fitted to data (not the initial DCT basis)."""
        return self.flow_code is not None and self.flow_code.is_fitted

    def keypoints(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) → (N, K, 2) landmarks in [-1, 1] (runs at net_size)."""
        return self.keypoint_net(resize(image, self.cfg.net_size))

    # ------------------------------------------------------------------ decoding

    def warp(self, reference: torch.Tensor, ref_points: torch.Tensor, target_points: torch.Tensor,
             ref_motion: torch.Tensor, motion: torch.Tensor, driver_ref_points: torch.Tensor | None = None,
             pin: torch.Tensor | None = None, grid_offset: torch.Tensor | None = None) -> Warped:
        """Warp each clip's reference (B, 3, S, S) to every target frame's keypoints (B, T, K, 2).

        With a flow code the warp starts from the flow the motion carries, which is the
        driver's; given the driver's reference keypoints `driver_ref_points` (B, K, 2) and they
        are not the reference's own (another face, or another frame), the flow is retargeted to
        the reference's geometry (`_retarget`); given them and they are its own, the flow is
        pinned to the target keypoints at the eyes and mouth only. `pin` (B,) bool retargets
        those clips even on their own face (training: the warps retargeting makes). Without a
        flow code the warp starts from the TPS. `grid_offset` is subtracted from the final grid."""
        b, t = target_points.shape[:2]
        cfg = self.cfg
        ref_out = reference.repeat_interleave(t, 0)                              # (N, 3, S, S)
        ref_net = resize(ref_out, cfg.net_size)
        src = ref_points.repeat_interleave(t, 0)                                 # (N, K, 2)
        dst = target_points.flatten(0, 1)
        if not cfg.flow_code:
            start = tps_grid(src, dst, cfg.flow_size, cfg.flow_size, anchors=self.anchors)
        else:
            code_flow = self.flow_code.flow(motion[..., cfg.motion_dim:]).flatten(0, 1)   # the driver's
            start = flow_to_grid(resize(code_flow, cfg.flow_size))
            if driver_ref_points is not None or pin is not None:
                drv = src if driver_ref_points is None else driver_ref_points.repeat_interleave(t, 0)
                other = (drv - src).abs().amax((1, 2)) > 1e-6       # another face: retarget the driver's flow
                if pin is not None:
                    other = other | pin.repeat_interleave(t)
                # its own face, driven by its own keypoints: only the eyes and mouth pinned
                own = ~other if driver_ref_points is not None else torch.zeros_like(other)
                f = cfg.flow_size
                for chosen, points in ((other, None), (own, OWN_FACE_PINS)):
                    if chosen.any():
                        tps = tps_grid(src, dst, f, f, anchors=self.anchors) if points is None else None
                        moved = self._retarget(start, tps, drv, drv + dst - src, points)
                        start = torch.where(chosen[:, None, None, None], moved, start)
        base = start + resize(self.coarse_flow(motion, ref_motion).flatten(0, 1), cfg.flow_size).permute(0, 2, 3, 1)
        # the absolute codes may tell the flow net about the face, but only the change is trained by it
        codes, ref_codes = self._vq(motion), self._vq(ref_motion)
        cond = self.flow_cond(torch.cat([codes - ref_codes[:, None], codes.detach()], -1).flatten(0, 1))
        grid, occlusion = self.flow_net(resize(ref_net, cfg.flow_size), base, src, dst, cond)
        if grid_offset is not None:   # (1 or N, f, f, 2) taken off the final grid (relative transfer)
            grid = grid - grid_offset
        occlusion = resize(occlusion, cfg.net_size)
        return Warped(warp_image(ref_out, grid), warp_image(ref_net, grid), occlusion, grid, base, start)

    def _retarget(self, code: torch.Tensor, tps: torch.Tensor | None, drv_ref: torch.Tensor, drv: torch.Tensor,
                  points: slice | None = None) -> torch.Tensor:
        """The driver's flow (a backward grid, N x f x f x 2) moved onto another face: first pinned
        to the driver's landmarks (a TPS interpolant of where the flow sends each landmark minus
        where its reference landmark is, subtracted, so the flow carries them exactly), then the
        TPS of the driver's landmark change (drv_ref → drv) replaced by the face's own (`tps`).
        What remains of the driver's flow is the motion landmarks do not explain (hair, head,
        background) (measured: docs/decisions.md).

        `points` pins only those landmarks (the others keep the flow's own miss), for a face
        driven by its own landmarks, where there is no TPS to swap (tps=None): the eyes and
        mouth, which the 16² flow code cannot show closing or parting (docs/decisions.md)."""
        f = self.cfg.flow_size
        miss = sample_grid(code, drv) - drv_ref   # where the flow sends them minus where they were
        if points is not None:
            keep = torch.zeros(miss.shape[1], dtype=torch.bool, device=miss.device)
            keep[points] = True
            miss = torch.where(keep[None, :, None], miss, torch.zeros_like(miss))
        pinned = code - grid_to_flow(tps_grid(drv + miss, drv, f, f, anchors=self.anchors)).permute(0, 2, 3, 1)
        return pinned if tps is None else pinned + tps - tps_grid(drv_ref, drv, f, f, anchors=self.anchors)

    def conditions(self, warped: Warped, motion: torch.Tensor, content: torch.Tensor, frames: int):
        # the diffusion loss trains the occlusion mask but not the warp (the warp loss does)
        shared = {"warped": torch.cat([warped.net.detach(), warped.occlusion], 1), "frames": frames}
        content = content.repeat_interleave(frames, 0)                           # (N, K, E)
        # the denoiser reads the motion codes but does not shape them: trained by it, codes
        # learned to carry what helps generate a clip's look (its person) instead of its motion
        cond = {"motion": self._vq(motion).flatten(0, 1).detach(), "content": content}
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
               driver_ref_points: torch.Tensor | None = None, sigma_max: float | None = None,
               sampler: str = "heun", parts: bool = False, grid_offset: torch.Tensor | None = None,
               pin: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, T, 3, S, S) for motion (B, T, G*d [+ C]) on each clip's reference.

        `target_points` overrides the keypoints the motion implies (relative transfer), and
        `driver_ref_points` says whose geometry the flow code's flow has, `pin` which clips to
        retarget on their own face and `grid_offset` what is taken off the final grid (see `warp`);
        `steps=0` returns the warped reference, `steps=1` adds the posterior-mean residual,
        more steps sample with `sampler` (sampling.SAMPLERS); with steps ≥ 1 the mouth refiner,
        if the model has one, repaints the mouth.

        With `parts`, returns the model's two parts apart, for the caller to render at any
        resolution (the warp's grid is resolution-free; transfer renders into the source frame,
        face/composite.py): the final backward grid (B, T, f, f, 2) and the generated part
        (B, T, 3, S, S), out − the warp at out_size."""
        check_sampler(sampler)
        b, t = motion.shape[:2]
        if target_points is None:
            target_points = ref_points[:, None] + self.displacement(motion, ref_motion)
        warped = self.warp(reference, ref_points, target_points, ref_motion, motion, driver_ref_points, pin=pin,
                           grid_offset=grid_offset)
        if steps == 0:   # the warp alone (fastest; no generated mouth interior)
            return self._rendered(warped, warped.out.clamp(-1, 1), b, t, parts)
        shared, cond, uncond = self.conditions(warped, motion, content, t)
        n = self.cfg.net_size
        sigma_max = sigma_max or self.cfg.sample_sigma_max
        denoise = guided(self.denoiser, guidance, cond, uncond)
        if steps == 1:   # posterior mean E[residual | conditions]: one call, no noise
            zeros = torch.zeros((b * t, 3, n, n), device=reference.device)
            residual = denoise(zeros, torch.full((b * t,), sigma_max, device=reference.device), **shared)
        else:
            noise = torch.randn((b * t, 3, n, n), generator=generator, device=reference.device)
            if sampler == "heun":
                sigmas = karras_sigmas(steps, sigma_max=sigma_max, device=reference.device)
                residual = sample(denoise, noise, sigmas, cond=shared)
            else:   # diffusers' EDM schedulers
                residual = scheduler_sample(denoise, noise, steps, sampler=sampler, sigma_max=sigma_max, cond=shared)
        out = self.compose(warped, residual)
        if self.mouth is not None:
            out = self.mouth(out, reference.repeat_interleave(t, 0), ref_points.repeat_interleave(t, 0),
                             target_points.flatten(0, 1))
        return self._rendered(warped, out, b, t, parts)

    def _rendered(self, warped: Warped, out: torch.Tensor, b: int, t: int, parts: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`out` (N, 3, S, S) as (B, T, 3, S, S); with `parts`, the grid and the generated part (decode)."""
        s = self.cfg.out_size
        if parts:
            f = warped.grid.shape[1]
            return warped.grid.view(b, t, f, f, 2), (out - warped.out).view(b, t, 3, s, s)
        return out.view(b, t, 3, s, s)

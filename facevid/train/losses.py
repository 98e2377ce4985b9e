"""The cross-driven training losses of a FaceVid (seed 001): content from half A of each clip,
motion from half B, reconstruct B; plus the structural losses that keep motion from collapsing
to "copy the reference" (landmarks, keypoints, optical flow, correspondence)."""

from __future__ import annotations

import math

import torch

from facevid.face.landmarks import MOUTH
from facevid.model.facevid import FaceVid, region_mask, resize
from facevid.model.warp import grid_to_flow, sample_grid
from facevid.sampling import sample_training_sigmas


def training_losses(model: FaceVid, batch: dict, generator: torch.Generator | None = None, *,
                    teacher_forcing: float = 0.0, sigma_max_share: float = 0.0,
                    mouth_weight: float = 1.0, pin_share: float = 0.0) -> tuple[dict, dict]:
    """(losses, metrics) of one batch (facevid.train.batches.BatchSampler).

    With probability `teacher_forcing` per clip the warp is driven by the true target
    landmarks instead of the codes' prediction, so the flow net and denoiser learn from
    correct motion while the landmark head is still poor (measured: a flow net trained
    only on predicted motion made the warp with true landmarks 0.6 dB worse than TPS).
    `pin_share` of the teacher-forced clips have their flow code's flow pinned to the true
    landmarks (`warp`'s pin: the warp retargeting makes between people, whose mouth opens
    by stretching the lips), so the flow net and denoiser learn to finish such warps.
    `sigma_max_share` of the noise levels are the sampler's σ_max; the diffusion loss weighs
    the pixels of each target's mouth `mouth_weight` times."""
    target = batch["target"]                                                   # (B, Tb, 3, S, S)
    b = target.shape[0]
    enc_a, enc_b = model.encode_halves(batch["content"], target, batch["reference"], generator)
    ref_motion = enc_a.motion[torch.arange(b), batch["ref_index"]]               # (B, M)
    landmarks, keypoints, disp_b, cont_ref = _landmark_losses(model, batch, enc_a, enc_b, ref_motion)
    target_points = batch["ref_landmarks"][:, None] + disp_b
    pin = None
    if teacher_forcing > 0:
        forced = torch.rand(b, generator=generator, device=target.device) < teacher_forcing
        target_points = torch.where(forced[:, None, None, None], batch["target_landmarks"], target_points)
        if pin_share > 0 and model.cfg.flow_code:
            pin = forced & (torch.rand(b, generator=generator, device=target.device) < pin_share)
    warped = model.warp(batch["reference"], batch["ref_landmarks"], target_points, ref_motion, enc_b.motion, pin=pin)
    losses = _warp_losses(model, batch, warped, enc_b.quant.continuous, cont_ref)
    losses.update(diffusion=_diffusion_loss(model, batch, warped, enc_a, enc_b, generator, sigma_max_share,
                                            mouth_weight),
                  landmarks=landmarks, keypoints=keypoints,
                  rate=enc_a.quant.rate_loss)   # shared by both halves (quantized together)
    return losses, _metrics(model, batch, warped, enc_b)


def _pixels(model: FaceVid) -> float:
    return model.cfg.net_size / 2   # landmark losses in pixels at net_size (coordinates span 2)


def _landmark_losses(model: FaceVid, batch: dict, enc_a, enc_b, ref_motion: torch.Tensor):
    """Motion codes (and the continuous motion before quantization) → landmark displacement, and
    KeypointNet → landmarks; returns the two losses, half B's displacement and the continuous
    reference motion."""
    b, tb = batch["target"].shape[:2]
    pixels, ref_points = _pixels(model), batch["ref_landmarks"]
    true_b = batch["target_landmarks"] - ref_points[:, None]
    true_a = batch["content_landmarks"] - ref_points[:, None]
    disp_b = model.displacement(enc_b.motion, ref_motion)
    disp_a = model.displacement(enc_a.motion, ref_motion)
    loss = pixels * ((disp_b - true_b).abs().mean() + (disp_a - true_a).abs().mean()) / 2
    # The same head on the continuous motion before quantization: a direct gradient that
    # organises the encoder's features by motion, which the codes then inherit (through
    # the quantizer alone, tiny models' codes explained ~1% of unseen landmark motion).
    cont_a, cont_b = enc_a.quant.continuous, enc_b.quant.continuous
    cont_ref = cont_a[torch.arange(b), batch["ref_index"]]
    loss = loss + pixels * ((model.displacement(cont_b, cont_ref) - true_b).abs().mean()
                            + (model.displacement(cont_a, cont_ref) - true_a).abs().mean()) / 2
    target_net = resize(batch["target"].flatten(0, 1), model.cfg.net_size)
    reference_net = resize(batch["reference"], model.cfg.net_size)
    predicted = model.keypoint_net(torch.cat([reference_net, target_net[::tb], target_net[tb - 1::tb]]))
    true = torch.cat([ref_points, batch["target_landmarks"][:, 0], batch["target_landmarks"][:, -1]])
    return loss, pixels * (predicted - true).abs().mean(), disp_b, cont_ref


def _warp_losses(model: FaceVid, batch: dict, warped, cont_b: torch.Tensor, cont_ref: torch.Tensor) -> dict:
    """The warp's L1 to the target, its correspondence with the true landmarks and its flow."""
    target = batch["target"]
    tb, pixels = target.shape[1], _pixels(model)
    loss_warp = (warped.out - target.flatten(0, 1)).abs().mean()
    # the final warp must carry each true target landmark back to the reference's (dlib's
    # geometry, which AKD and the motion error measure): the backward grid sampled there
    at = sample_grid(warped.grid, batch["target_landmarks"].flatten(0, 1))
    loss_correspondence = pixels * (at - batch["ref_landmarks"].repeat_interleave(tb, 0)).abs().mean()
    loss_flow = target.new_zeros(())
    if "target_flow" in batch:   # optical flow target → reference, (B, Tb, 2, F, F) normalised
        true_flow = batch["target_flow"].flatten(0, 1)
        size = true_flow.shape[-1]

        def flow_error(grid):
            return pixels * (resize(grid_to_flow(grid), size) - true_flow).abs().mean()

        # the final grid, the coarse flow from the codes and (direct gradient, as for the
        # landmarks) from the continuous motion, each on top of the start (TPS or flow code)
        cont_flow = resize(model.coarse_flow(cont_b, cont_ref).flatten(0, 1), model.cfg.flow_size)
        loss_flow = (flow_error(warped.grid) + flow_error(warped.base)
                     + flow_error(warped.start + cont_flow.permute(0, 2, 3, 1))) / 3
    return {"warp": loss_warp, "flow": loss_flow, "correspondence": loss_correspondence}


def _diffusion_loss(model: FaceVid, batch: dict, warped, enc_a, enc_b, generator, sigma_max_share: float,
                    mouth_weight: float) -> torch.Tensor:
    """EDM loss of the denoiser on the residual between the target and the warped reference,
    with classifier-free condition dropout."""
    cfg, target = model.cfg, batch["target"]
    b, tb = target.shape[:2]
    target_net = resize(target.flatten(0, 1), cfg.net_size)                    # (N, 3, n, n)
    shared, cond, uncond = model.conditions(warped, enc_b.motion, enc_a.content, tb)
    drop = (torch.rand(b, generator=generator, device=target.device) < cfg.cond_dropout).repeat_interleave(tb)
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
    weight = None
    if mouth_weight != 1.0:
        mouth = region_mask(batch["target_landmarks"].flatten(0, 1)[:, MOUTH], cfg.net_size, pad=0.04)
        weight = 1.0 + (mouth_weight - 1.0) * mouth[:, None]
    residual = target_net - warped.net.detach()
    return model.denoiser.loss(residual, noise, sigma, weight=weight, **shared, **cond).mean()


@torch.no_grad()
def _metrics(model: FaceVid, batch: dict, warped, enc_b) -> dict:
    """What the training log shows: warp PSNR beside copying, the code usage, the temperature."""
    target, ref_points = batch["target"], batch["ref_landmarks"]
    tb = target.shape[1]
    target_flat = target.flatten(0, 1)
    mse = ((warped.out - target_flat) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
    copy = ((batch["reference"].repeat_interleave(tb, 0) - target_flat) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
    still = (batch["target_landmarks"] - ref_points[:, None]).abs().mean() * _pixels(model)
    quant = enc_b.quant
    return {"warp_psnr": (10 * torch.log10(4.0 / mse)).mean().item(),
            "copy_psnr": (10 * torch.log10(4.0 / copy)).mean().item(),
            "landmarks_still": still.item(), "bits_soft": quant.bits_soft.item(), "bits_hard": quant.bits_hard.item(),
            "codes_min": quant.distinct.min().item(), "codes_mean": quant.distinct.float().mean().item(),
            "tau": float(model.quantizer.tau)}

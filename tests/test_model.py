"""The BCD model on the tiny preset: shapes, gradients, overfitting, motion in the codes."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from facevid import synthetic
from facevid.config import PRESETS, TrainConfig
from facevid.io.arrays import points_to_unit
from facevid.io.cache import load_cache
from facevid.model.facevid import FaceVid, region_mask
from facevid.model.warp import sample_grid
from facevid.train.batches import BatchSampler
from facevid.train.loop import fit_flow_code, make_optimizer, train_step
from facevid.train.losses import training_losses
from facevid.train.prepare import write_synthetic_cache

TINY = PRESETS["tiny"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    write_synthetic_cache(path, clips=8, frames=24, size=32, seed=1)
    return path


def _sampler(cache, seed=0, clips_per_batch=2):
    return BatchSampler(load_cache(cache), out_size=TINY.out_size, net_size=TINY.net_size,
                        clips_per_batch=clips_per_batch, content_frames=3, target_frames=3,
                        flow_size=TINY.flow_size // 2, seed=seed)


@pytest.mark.parametrize("frames", [1, 3, 7])
def test_shapes_for_any_frame_count(frames):
    torch.manual_seed(0)
    model = FaceVid(TINY).eval()
    video = torch.rand(2, frames, 3, TINY.net_size, TINY.net_size) * 2 - 1
    enc = model.encode(video)
    assert enc.content.shape == (2, TINY.content_tokens, TINY.enc_dim)
    assert enc.motion.shape == (2, frames, TINY.motion_dim + TINY.flow_code)   # code vectors + flow components
    assert enc.codes.shape == (2, frames, TINY.vq_groups + TINY.flow_code)     # codes + flow levels
    assert torch.equal(model.motion_from_codes(enc.codes), enc.motion)
    reference = torch.rand(2, 3, TINY.out_size, TINY.out_size) * 2 - 1
    points = model.keypoints(reference)
    assert points.shape == (2, TINY.keypoints, 2) and points.abs().max() <= 1
    out = model.decode(reference, points, enc.motion[:, 0], enc.motion, enc.content, steps=2,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, frames, 3, TINY.out_size, TINY.out_size)
    assert torch.isfinite(out).all()


def test_flow_code_fits_quantizes_and_drives_the_warp():
    torch.manual_seed(0)
    model = FaceVid(TINY).eval()
    f, c = TINY.flow_input, TINY.flow_code
    assert not model.flow_code_fitted
    fields = torch.randn(c, 2 * f * f) * 0.02
    flows = (torch.randn(400, c) @ fields + 0.01).view(-1, 2, f, f)   # a rank-C family around a mean
    model.flow_code.fit(flows)
    assert model.flow_code_fitted and "flow_code.fitted" in model.state_dict()
    levels = model.flow_code.quantize(flows)
    assert levels.shape == (400, c) and levels.min() >= 0 and levels.max() < 2 ** TINY.flow_code_bits
    coded = model.flow_code.flow(model.flow_code.dequantize(levels))
    error = (coded - flows).pow(2).mean().sqrt() / (flows - flows.mean(0)).pow(2).mean().sqrt()
    assert error < 0.2   # 4-bit levels over ±3 standard deviations
    # the warp starts from the code's flow (here an unfitted code: cosine patterns, the first a
    # uniform x shift); the driver's own keypoints (the same as the reference's, unmoved) pin
    # the eyes and mouth to them and leave the flow at the other keypoints
    model = FaceVid(TINY).eval()
    reference = torch.rand(1, 3, TINY.out_size, TINY.out_size) * 2 - 1
    face = synthetic.landmarks(synthetic.random_identity(np.random.default_rng(0)), synthetic.Motion(), size=64)
    points = torch.from_numpy(points_to_unit(face, 64)).float()[None]                  # a face's 68 landmarks
    shift = torch.zeros(1, 2, f, f)
    shift[:, 0] = 0.1   # every pixel shows what the reference shows 5% of the crop further right
    shifted, unshifted = (model.flow_code.dequantize(model.flow_code.quantize(s)) for s in (shift, 0 * shift))
    move = torch.cat([torch.zeros(1, 1, TINY.motion_dim), shifted[:, None]], -1)
    still = torch.cat([torch.zeros(1, 1, TINY.motion_dim), unshifted[:, None]], -1)
    warped = model.warp(reference, points, points[:, None], still[:, 0], move)
    same = model.warp(reference, points, points[:, None], still[:, 0], move, driver_ref_points=points)

    sent = sample_grid   # where a backward grid takes the points from
    eyes_mouth, others = slice(36, 68), slice(0, 36)
    unpinned = (sent(warped.start, points)[:, eyes_mouth] - points[:, eyes_mouth]).norm(dim=-1).mean()
    pinned = (sent(same.start, points)[:, eyes_mouth] - points[:, eyes_mouth]).norm(dim=-1).mean()
    assert unpinned > 0.04 and pinned < 0.2 * unpinned   # (up to the 16² grid's interpolation)
    kept = (sent(same.start, points)[:, others] - sent(warped.start, points)[:, others]).norm(dim=-1).mean()
    assert kept < 0.2 * unpinned
    base_flow = warped.base - model.warp(reference, points, points[:, None], still[:, 0], still).base
    expected = (model.flow_code.flow(shifted) - model.flow_code.flow(unshifted))[..., 0, :, :].mean().item()
    assert base_flow[..., 0].mean().item() == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(0.1, abs=0.025)   # within a quantization step (0.4 sd = 0.016) of each
    assert base_flow[..., 1].abs().max().item() < 1e-5


def test_retargeting_pins_the_drivers_flow_to_its_landmarks():
    """Across faces the driver's flow is first made to carry the driver's landmarks exactly
    (then its landmark TPS is swapped for the source's): sampled at the driver's landmarks, the
    pinned flow points at the driver's reference landmarks whatever flow it started from."""
    import torch.nn.functional as F

    from facevid.model.warp import border_anchors, tps_grid

    torch.manual_seed(0)
    model = FaceVid(TINY)
    f = TINY.flow_size
    lattice = torch.stack(torch.meshgrid(torch.linspace(-0.5, 0.5, 4), torch.linspace(-0.5, 0.5, 4),
                                         indexing="xy"), -1).view(1, 16, 2)
    drv_ref = lattice.repeat(2, 1, 1)
    drv = drv_ref + torch.randn(2, 16, 2) * 0.02
    other = F.interpolate(0.05 * torch.randn(2, 2, 2, 2), size=(f, f), mode="bilinear", align_corners=False)
    code = tps_grid(drv_ref, drv, f, f, anchors=border_anchors()) + other.permute(0, 2, 3, 1)   # landmarks + more
    same_face = tps_grid(drv_ref, drv, f, f, anchors=border_anchors())
    pinned = model._retarget(code, same_face, drv_ref, drv)
    at, before = sample_grid(pinned, drv), sample_grid(code, drv)
    assert (before - drv_ref).abs().mean() > 0.02
    assert (at - drv_ref).abs().mean() < 0.1 * (before - drv_ref).abs().mean()


def test_decode_is_seeded():
    torch.manual_seed(0)
    model = FaceVid(TINY).eval()
    video = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    enc = model.encode(video)
    ref = video[:, 0]
    pts = model.keypoints(ref)
    runs = [model.decode(ref, pts, enc.motion[:, 0], enc.motion, enc.content, steps=2, guidance=1.5,
                         generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_gradients_reach_every_part(synthetic_cache):
    torch.manual_seed(0)
    model = FaceVid(TINY).train()
    losses, _ = training_losses(model, _sampler(synthetic_cache).sample(), torch.Generator().manual_seed(0))
    sum(losses.values()).backward()
    for part in ("encoder", "quantizer", "landmark_head", "keypoint_net", "flow_in", "flow_net", "dit"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum().item() for g in grads) > 0, part
    # after a few steps (the landmark head and adaLN start at zero), the encoder gets gradient
    # through the quantizer from the reconstruction losses alone
    cfg = TrainConfig(preset="tiny", warmup_steps=1)
    optimizer, generator = make_optimizer(model, cfg), torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(model, optimizer, _sampler(synthetic_cache).sample(), generator, cfg, world=1)
    model.zero_grad()
    losses, _ = training_losses(model, _sampler(synthetic_cache).sample(), torch.Generator().manual_seed(0))
    (losses["warp"] + losses["diffusion"]).backward()
    assert model.encoder.motion_out.weight.grad.abs().sum() > 0


def _reconstruction_error(model, batch, steps=4):
    model.eval()
    with torch.no_grad():
        b, t = batch["target"].shape[:2]
        enc_a = model.encode(batch["content"])
        enc_b = model.encode(batch["target"])
        ref_motion = enc_a.motion[torch.arange(b), batch["ref_index"]]
        out = model.decode(batch["reference"], batch["ref_landmarks"], ref_motion, enc_b.motion, enc_a.content,
                           steps=steps, generator=torch.Generator().manual_seed(0))
    model.train()
    return ((out - batch["target"]) ** 2).mean().item()


@pytest.fixture(scope="module")
def overfit_run(synthetic_cache):
    """tiny trained for 150 steps on 2 fixed synthetic clips (seeded, CPU)."""
    torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        model = FaceVid(TINY).train()
        cfg = TrainConfig(preset="tiny", lr_encoder=2e-3, lr_decoder=2e-3, lr_quantizer=5e-3, warmup_steps=10)
        optimizer = make_optimizer(model, cfg)
        from facevid.train.loop import set_learning_rate

        fit_flow_code(model, load_cache(synthetic_cache), cfg, TINY)   # as `facevid train` starts
        batch = _sampler(synthetic_cache, seed=5).sample()
        before = _reconstruction_error(model, batch)
        generator = torch.Generator().manual_seed(0)
        for step in range(150):
            set_learning_rate(optimizer, step, cfg.warmup_steps)
            train_step(model, optimizer, batch, generator, cfg, world=1)
        after = _reconstruction_error(model, batch)
    return model, before, after


def test_overfit_cuts_reconstruction_error(overfit_run):
    _, before, after = overfit_run
    print(f"reconstruction MSE before {before:.4f}, after 150 steps {after:.4f} ({before / after:.1f}x)")
    # measured: 5.6x when the warp started from TPS on the codes' landmarks, 5.0x from tiny's
    # flow code (16 components of 4 bits of the Farnebäck flow of 32-px frames, which no step improves)
    assert after < before / 4


def test_motion_codes_carry_known_motion(synthetic_cache):
    """Frames that differ in motion get different hard codes, and the codes predict the known
    motion: the landmark change they imply matches the renderer's exact one.

    Scored on the 8 synthetic faces the tiny model trained on: generalising motion codes to
    unseen faces takes far more than a test's 120 steps (measured: ~0 R² on 8 unseen faces
    after 300 steps on 48 training faces); `facevid eval` measures that on real people. The
    optical-flow loss is off: tiny's 8 bits cannot carry the whole crop's flow as well
    (measured with it: 14 distinct codes, 18% explained; without: 22, 30%). Measured at learning
    rate 3e-3: 49 distinct codes, 19% explained after 120 steps (16% after 100, 14% at 4e-3; 2e-3
    takes 300 steps to 24%): short runs swing by several points, so the bar is 10%; codes that
    carry nothing explain 0%."""
    torch.manual_seed(0)
    model = FaceVid(TINY).train()
    cfg = TrainConfig(preset="tiny", lr_encoder=3e-3, lr_decoder=3e-3, lr_quantizer=5e-3, warmup_steps=10,
                      loss_diffusion=0.1, loss_landmarks=5.0, loss_flow=0.0, teacher_forcing=0.0)
    optimizer = make_optimizer(model, cfg)
    sampler = _sampler(synthetic_cache, seed=2, clips_per_batch=4)
    generator = torch.Generator().manual_seed(0)
    from facevid.train.loop import set_learning_rate

    for step in range(120):
        set_learning_rate(optimizer, step, cfg.warmup_steps)
        train_step(model, optimizer, sampler.sample(), generator, cfg, world=1)
    model.eval()
    distinct, predicted, true = 0, [], []
    for clip in load_cache(synthetic_cache):
        frames = torch.from_numpy(np.array(clip.frames)).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
        with torch.no_grad():
            enc = model.encode(frames)
            predicted.append(model.displacement(enc.motion, enc.motion[:, 0])[0].numpy())
        true.append(clip.landmarks - clip.landmarks[:1])
        distinct += len({tuple(c) for c in enc.codes[0, :, :TINY.vq_groups].tolist()})   # not the flow levels
    predicted, true = np.concatenate(predicted), np.concatenate(true)
    explained = 1 - ((predicted - true) ** 2).sum() / (true ** 2).sum()
    print(f"{distinct} distinct motion codes over 8 clips of 24 frames; the codes explain "
          f"{explained:.0%} of the true landmark motion")
    assert distinct >= 2 * 8          # codes change within clips, not only between them
    assert explained > 0.10           # codes that carry nothing explain 0


def test_presets_are_coherent():
    import math

    small, paper = PRESETS["small"], PRESETS["paper"]
    assert paper.vq_groups * math.log2(paper.vq_codebook) == 320 and paper.rate_target == 160
    assert small.vq_groups * math.log2(small.vq_codebook) <= 320 and small.rate_target < 120
    for cfg in PRESETS.values():
        assert cfg.net_size % cfg.dit_patch == 0 and cfg.out_size % cfg.net_size == 0
    with pytest.raises(Exception, match="dit_patch"):
        type(small)(net_size=60)


def test_optical_flow_target_recovers_a_known_shift():
    """The flow target of the warp: a frame shifted right by 4 px (of 64) shows at p what the
    reference shows at p − 4 px, so its backward flow is −4 px = −0.125 in normalised x."""
    from facevid.face.flow import optical_flow

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (0, 0), 2)
    reference = texture[16:80, 16:80]
    shifted = texture[16:80, 12:76]
    flow = optical_flow(reference, shifted[None], 16)
    assert flow.shape == (1, 2, 16, 16)
    centre = flow[0, :, 4:12, 4:12]
    assert abs(centre[0].mean() + 0.125) < 0.02 and abs(centre[1].mean()) < 0.02


def test_encoder_reads_the_measured_flow_of_a_known_shift():
    """The flow the encoder reads (flow_input) is the warp's target measured on the model's own
    tensors: the shifted frame's flow is −4 px of 64 in x; the reference's is zero."""
    from facevid.io.arrays import to_tensor
    from facevid.model.flow_code import measured_flow

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (0, 0), 2)
    reference = to_tensor(texture[None, 16:80, 16:80], 64)                         # (1, 3, 64, 64)
    frames = to_tensor(np.stack([texture[16:80, 16:80], texture[16:80, 12:76]]), 64)[None]
    flow = measured_flow(frames, reference, 16)
    assert flow.shape == (1, 2, 2, 16, 16) and flow.dtype == torch.float32
    assert flow[0, 0].abs().max() < 1e-3
    centre = flow[0, 1, :, 4:12, 4:12]
    assert abs(centre[0].mean() + 0.125) < 0.02 and abs(centre[1].mean()) < 0.02


def test_correspondence_loss_is_zero_for_a_warp_that_carries_the_landmarks(synthetic_cache):
    """At init the flow heads are zero, so a teacher-forced warp is the TPS from the true target
    landmarks to the reference's: it carries them back up to interpolation (loss near 0 px).
    Driven by the codes instead, the untrained landmark head predicts no motion: the warp is
    the identity and the loss is how far the landmarks moved. (Without a flow code: with one
    the warp starts from the measured flow instead of the TPS.)"""
    torch.manual_seed(0)
    model = FaceVid(replace(TINY, flow_code=0))
    sampler = BatchSampler(load_cache(synthetic_cache), out_size=TINY.out_size, net_size=TINY.net_size,
                           clips_per_batch=2, content_frames=3, target_frames=3, strides=(4, 8), seed=0)
    batch = sampler.sample()   # frames 12-24 apart: the landmarks move ~0.8 px at net_size
    forced, _ = training_losses(model, batch, torch.Generator().manual_seed(0), teacher_forcing=1.0)
    still, metrics = training_losses(model, batch, torch.Generator().manual_seed(0), teacher_forcing=0.0)
    assert metrics["landmarks_still"] > 0.5
    assert still["correspondence"].item() == pytest.approx(metrics["landmarks_still"], rel=0.05)
    assert forced["correspondence"].item() < 0.1 * metrics["landmarks_still"]


def test_mouth_weight_weighs_the_diffusion_loss_inside_the_mouth_box(synthetic_cache):
    points = torch.tensor([[[-0.5, 0.0], [0.0, 0.5]]])                     # a box over x -0.5..0, y 0..0.5
    mask = region_mask(points, 8)[0]
    # pixel centres at net_size 8: -0.875, -0.625, ..., 0.875 → columns 2-3, rows 4-5 inside
    assert mask.sum() == 4 and mask[4:6, 2:4].all()
    assert region_mask(points, 8, pad=0.25)[0].sum() == 16
    torch.manual_seed(0)
    model = FaceVid(TINY)
    batch = _sampler(synthetic_cache).sample()
    plain, _ = training_losses(model, batch, torch.Generator().manual_seed(0))
    same, _ = training_losses(model, batch, torch.Generator().manual_seed(0), mouth_weight=1.0)
    heavy, _ = training_losses(model, batch, torch.Generator().manual_seed(0), mouth_weight=5.0)
    assert same["diffusion"].item() == plain["diffusion"].item()
    assert heavy["diffusion"].item() > 1.05 * plain["diffusion"].item()
    assert heavy["warp"].item() == plain["warp"].item()


def test_pin_makes_the_warp_carry_the_target_landmarks_on_the_same_face(synthetic_cache):
    """`pin` retargets a clip's flow code onto its own target keypoints; unpinned clips (and
    the same face without `pin`) keep the flow code's flow."""
    torch.manual_seed(0)
    model = FaceVid(TINY)
    batch = _sampler(synthetic_cache, clips_per_batch=2).sample()
    ref_points, target = batch["ref_landmarks"], batch["target_landmarks"] + 0.05   # the flow disagrees
    encoded = model.encode(batch["target"], batch["reference"])
    ref_motion = encoded.motion[:, 0]
    args = (batch["reference"], ref_points, target, ref_motion, encoded.motion)
    plain = model.warp(*args)
    pinned = model.warp(*args, pin=torch.tensor([True, False]))
    t = target.shape[1]
    assert torch.equal(pinned.start[t:], plain.start[t:]) and not torch.equal(pinned.start[:t], plain.start[:t])
    miss = (sample_grid(pinned.start[:t], target[0]) - ref_points[:1]).abs().mean()
    assert miss < 0.25 * (sample_grid(plain.start[:t], target[0]) - ref_points[:1]).abs().mean()
    losses, _ = training_losses(model, batch, torch.Generator().manual_seed(0), teacher_forcing=1.0, pin_share=1.0)
    assert all(torch.isfinite(v) for v in losses.values())

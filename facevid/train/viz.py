"""The PNG grid that `facevid train` writes every N steps: reconstructions and cross transfers."""

from __future__ import annotations

from pathlib import Path

import torch

from facevid.config import ModelConfig, TrainConfig
from facevid.eval.report import save_grid

COLUMNS = ["reference", "target", "warped", "output", "other face", "transfer"]


class GridMaker:
    """A fixed batch (same every time, so grids compare across steps)."""

    def __init__(self, clips, cfg: TrainConfig, model_cfg: ModelConfig, clips_per_grid: int = 4):
        from facevid.train.batches import BatchSampler

        sampler = BatchSampler(clips, out_size=model_cfg.out_size, net_size=model_cfg.net_size,
                               clips_per_batch=clips_per_grid, content_frames=cfg.content_frames,
                               target_frames=cfg.target_frames, strides=(1,), flip_prob=0.0,
                               synthetic_prob=1.0 if not clips else 0.0, seed=12345)
        self.batch = sampler.sample()

    @torch.no_grad()
    def rows(self, model, steps: int | None = None) -> list[list[torch.Tensor]]:
        b = self.batch
        steps = model.cfg.sample_steps if steps is None else steps   # as transfer samples by default
        device = model.device
        batch = {k: v.to(device) for k, v in b.items()}
        clips, frames = batch["target"].shape[:2]
        enc_a = model.encode(batch["content"], batch["reference"])
        enc_b = model.encode(batch["target"], batch["reference"])
        ref_motion = enc_a.motion[torch.arange(clips), batch["ref_index"]]
        ref_points = model.keypoints(batch["reference"])
        g = torch.Generator(device).manual_seed(0)
        out = model.decode(batch["reference"], ref_points, ref_motion, enc_b.motion, enc_a.content, steps=steps,
                           generator=g)
        disp = model.displacement(enc_b.motion, ref_motion)
        warped = model.warp(batch["reference"], ref_points, ref_points[:, None] + disp, ref_motion, enc_b.motion)
        warped = warped.out.view(clips, frames, 3, *warped.out.shape[-2:])
        other = torch.roll(torch.arange(clips), -1)
        cross = model.decode(batch["reference"][other], ref_points[other], ref_motion[other], enc_b.motion,
                             enc_a.content[other], steps=steps, generator=g,
                             target_points=ref_points[other][:, None] + disp, driver_ref_points=ref_points)
        rows = []
        for i in range(clips):
            for t in (0, frames - 1):
                rows.append([batch["reference"][i], batch["target"][i, t], warped[i, t], out[i, t],
                             batch["reference"][other[i]], cross[i, t]])
        return rows

    def save(self, model, path: Path) -> Path:
        return save_grid(self.rows(model), path, COLUMNS)

"""Training data: cross-driven batches from a prepared crop cache and/or synthetic heads.

A batch holds, per clip, a window of consecutive frames split in two halves: A (content;
its frame `ref_index` is the reference) and B (motion; reconstructed from content(A) +
motion(B)). Landmarks are in [-1, 1] crop coordinates (pixel centres, align_corners=False).
"""

from __future__ import annotations

import numpy as np
import torch

from facevid.errors import InputError
from facevid.face.flow import optical_flow
from facevid.face.landmarks import FLIP_68
from facevid.io.arrays import points_to_unit, to_tensor
from facevid.io.cache import Clip


class BatchSampler:
    """Draws cross-driven batches; all randomness from one numpy Generator (resumable)."""

    def __init__(self, clips: list[Clip], *, out_size: int, net_size: int, clips_per_batch: int,
                 content_frames: int, target_frames: int, strides: tuple[int, ...] = (1, 2), flip_prob: float = 0.5,
                 synthetic_prob: float = 0.0, flow_size: int = 0, seed: int = 0):
        self.window = content_frames + target_frames
        self.clips = [c for c in clips if len(c.frames) >= self.window]
        if not self.clips and synthetic_prob < 1:
            raise InputError(f"no clip has the {self.window} frames a training window needs")
        self.out_size, self.net_size = out_size, net_size
        self.b, self.ta, self.tb = clips_per_batch, content_frames, target_frames
        self.strides, self.flip_prob, self.synthetic_prob = tuple(strides), flip_prob, synthetic_prob
        self.flow_size = flow_size
        weights = np.array([len(c.frames) for c in self.clips], float)
        self.weights = weights / weights.sum() if len(weights) else weights
        self.rng = np.random.default_rng(seed)

    def _window(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        fits = [s for s in self.strides if len(clip.frames) >= (self.window - 1) * s + 1] or [1]
        stride = fits[int(self.rng.integers(len(fits)))]
        span = (self.window - 1) * stride + 1
        start = int(self.rng.integers(0, len(clip.frames) - span + 1))
        index = np.arange(start, start + span, stride)
        return np.asarray(clip.frames[index]), clip.landmarks[index]

    def _synthetic(self) -> tuple[np.ndarray, np.ndarray]:
        from facevid import synthetic

        seed = int(self.rng.integers(2**31))
        rng = np.random.default_rng(seed)
        identity = synthetic.random_identity(rng)
        motions = synthetic.random_motion_sequence(rng, self.window)
        frames = synthetic.render_clip(identity, motions, size=self.out_size)
        marks = np.stack([synthetic.landmarks(identity, m, size=self.out_size) for m in motions])
        return frames, points_to_unit(marks, self.out_size).astype(np.float32)

    def sample(self) -> dict[str, torch.Tensor]:
        frames, marks, windows = [], [], []
        for _ in range(self.b):
            if self.rng.random() < self.synthetic_prob or not self.clips:
                f, m = self._synthetic()
            else:
                f, m = self._window(self.clips[int(self.rng.choice(len(self.clips), p=self.weights))])
            if self.rng.random() < self.flip_prob:
                f, m = f[:, :, ::-1], m[:, FLIP_68] * np.array([-1.0, 1.0], np.float32)
            windows.append(f)
            frames.append(to_tensor(f, self.out_size))
            marks.append(torch.from_numpy(np.ascontiguousarray(m)))
        ref_index = self.rng.integers(0, self.ta, self.b)
        flows = [torch.from_numpy(optical_flow(f[r], f[self.ta:], self.flow_size))
                 for f, r in zip(windows, ref_index)] if self.flow_size else []
        frames, marks = torch.stack(frames), torch.stack(marks)          # (B, W, 3, S, S), (B, W, 68, 2)
        ref_index = torch.from_numpy(ref_index)
        content = frames[:, :self.ta]
        b = torch.arange(self.b)
        batch = {
            "content": content,
            "target": frames[:, self.ta:],
            "reference": content[b, ref_index],
            "ref_index": ref_index,
            "ref_landmarks": marks[b, ref_index],
            "content_landmarks": marks[:, :self.ta],
            "target_landmarks": marks[:, self.ta:],
        }
        if flows:
            batch["target_flow"] = torch.stack(flows)                    # (B, Tb, 2, F, F)
        return batch

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

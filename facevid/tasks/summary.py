"""What a task did: the fields every task reports (output, frames, time) and its JSON form."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass(kw_only=True)
class TaskSummary:
    output: str
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0   # frames per second end to end

    def to_json(self) -> dict:
        return asdict(self)

    def finish(self, started: float) -> None:
        """Record the time since `started` (time.perf_counter) and the rate it gives."""
        self.seconds = time.perf_counter() - started
        self.fps = self.frames / max(self.seconds, 1e-9)

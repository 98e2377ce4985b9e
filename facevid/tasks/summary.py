"""What a task did: the fields every task reports (output, frames, time) and its JSON form; and
the loop that streams a task's frames into its writer under a progress bar."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable


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


def write_frames(frames: Iterable, writer, name: str, total: int | None, *, progress: bool,
                 check: Callable[[], None] | None = None) -> None:
    """Write each frame (io.video.Frame) at its time, the bar `name` advancing; `check` runs
    before the writer closes, so an error it raises leaves no output (the writer's atomic rule)."""
    from facevid.progress import progress_bar

    with writer, progress_bar(name, total, enabled=progress) as advance:
        for frame in frames:
            writer.write(frame.image, frame.time)
            advance(1)
        if check is not None:
            check()

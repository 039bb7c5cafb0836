"""One metric writer: TensorBoard event files plus the console log, and a progress line with ETA."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from dmvfn_jax.progress import format_duration

log = logging.getLogger("dmvfn_jax")


def _summary_writer_class():
    """tensorboardX's `SummaryWriter`, imported without PyTorch where PyTorch is not loaded yet.

    tensorboardX imports torch whenever it is installed (the parity extra installs it) only to
    accept torch tensors; this writer passes floats and numpy arrays, and the import cost about 2 s
    per process on a 2-core CPU. A `None` in `sys.modules` makes `import torch` raise ImportError
    for the duration of tensorboardX's import, which it handles; torch imports normally after."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Writes scalars and images to TensorBoard (`workdir/tensorboard`) and scalars to the log.

    Only process 0 writes; other processes get a writer that does nothing.
    """

    def __init__(self, logdir: str | Path | None, enabled: bool = True):
        self._tb = None
        if enabled and logdir is not None:
            SummaryWriter = _summary_writer_class()
            Path(logdir).mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(logdir), flush_secs=30)
        self.enabled = enabled

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            if self._tb is not None:
                self._tb.add_scalar(k, float(v), step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """`image` is (H, W, 3) float in [0, 1] or uint8."""
        if self._tb is not None:
            img = np.asarray(image)
            if img.dtype != np.uint8:
                img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
            self._tb.add_image(tag, img, step, dataformats="HWC")

    def text(self, step: int, tag: str, text: str) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """Steps/s, clips/s and ETA over the interval since the last report."""

    def __init__(self, total_steps: int, start_step: int, clips_per_step: int):
        self.total = total_steps
        self.clips_per_step = clips_per_step
        self._t = time.perf_counter()
        self._step = start_step

    def report(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        dt, ds = now - self._t, step - self._step
        rate = ds / dt if dt > 0 and ds > 0 else 0.0
        self._t, self._step = now, step
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        return {"steps_per_s": rate, "clips_per_s": rate * self.clips_per_step, "eta_s": eta}

    def line(self, step: int, speed: Mapping[str, float], metrics: Mapping[str, float]) -> str:
        pct = 100.0 * step / max(self.total, 1)
        eta = speed["eta_s"]
        parts = [
            f"step {step}/{self.total} ({pct:.0f}%)",
            f"loss {metrics['total']:.4f}",
            f"lap {metrics['lap']:.4f}",
        ]
        if metrics.get("vgg", 0.0):
            parts.append(f"vgg {metrics['vgg']:.4f}")
        parts += [
            f"psnr {metrics['psnr']:.2f}",
            f"lr {metrics['lr']:.2e}",
            f"|g| {metrics['grad_norm']:.3f}",
            f"{speed['steps_per_s']:.2f} steps/s" if speed["steps_per_s"] >= 0.1 or not speed["steps_per_s"] > 0
            else f"{1 / speed['steps_per_s']:.1f} s/step",
            f"{speed['clips_per_s']:.3g} clips/s",
            f"ETA {format_duration(eta) if np.isfinite(eta) else '?'}",
        ]
        return "  ".join(parts)

"""Reading frames and writing pictures, with errors that name the file at fault.

Frames are HWC RGB. Files are written atomically (temporary file beside the target, then
rename), so a failure never leaves a half-written output in place of a good one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dmvfn_jax.checkpoint import atomic_file
from dmvfn_jax.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class FrameError(InputError):
    """A frame that cannot be used; the message names the input."""


def parse_size(text: str, what: str = "--size") -> tuple[int, int]:
    """"WxH" (e.g. "448x256", width first as the docs write frame sizes) as (width, height)."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"{what} must be WIDTHxHEIGHT in pixels, e.g. 448x256; got {text!r}")
    return int(parts[0]), int(parts[1])


def decode_image(data: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as an (H, W, 3) uint8 RGB array; errors name `name`."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode == "P":  # palette images are RGB(A) underneath
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("1", "L", "I", "I;16", "F"):
                raise FrameError(f"{name}: has 1 channel (mode {mode}); DMVFN needs 3-channel RGB frames")
            if mode in ("LA", "La"):
                raise FrameError(f"{name}: has 2 channels (grey + alpha); DMVFN needs 3-channel RGB frames")
            if mode in ("RGBA", "RGBa"):
                raise FrameError(f"{name}: has 4 channels (RGBA); drop the alpha channel to get RGB frames")
            if mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except FrameError:
        raise
    except UnidentifiedImageError as e:
        raise FrameError(f"{name}: unreadable image (not a recognised image format, or corrupt)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise FrameError(f"{name}: unreadable image ({type(e).__name__}: {e})") from e


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    return decode_image(path.read_bytes(), path)


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FrameError(f"{folder}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def resolve_frames(inputs: Sequence[str | os.PathLike], needed: int = 2) -> list[Path]:
    """Frame files from a list of files and/or folders (a folder gives its last `needed` frames)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        files.extend(list_frames(p)[-needed:] if p.is_dir() else [p])
    if len(files) < needed:
        raise FrameError(f"need at least {needed} frames, got {len(files)} from {', '.join(map(str, inputs))}")
    return files[-needed:]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with rounding."""
    return np.clip(np.rint(np.asarray(img, np.float32) * 255.0), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike, img: np.ndarray, overwrite: bool = True) -> Path:
    """Writes an (H, W, 3) image (uint8, or float in [0, 1]) as PNG."""
    from PIL import Image

    arr = img if img.dtype == np.uint8 else to_uint8(img)
    with atomic_file(path, overwrite=overwrite) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 4.0, overwrite: bool = True) -> Path:
    """Writes frames (uint8, or float in [0, 1]) as a looping GIF (`visualize.write_gif`)."""
    from dmvfn_jax.visualize import write_gif

    if len(frames) == 0:
        raise ValueError("save_gif: no frames")
    return write_gif(path, frames, fps=fps, overwrite=overwrite)


def import_cv2(purpose: str):
    """OpenCV, or an error saying which extra installs it (its PyPI wheels bundle FFmpeg)."""
    try:
        import cv2
    except ImportError as e:
        raise InputError(
            f"{purpose} needs OpenCV: pip install 'dmvfn-jax[video]' (or opencv-python-headless); "
            "its wheels bundle FFmpeg, no system ffmpeg is needed"
        ) from e
    return cv2


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def load_video_frames(path: str | os.PathLike, start: int | None = None, count: int = 2,
                      min_count: int | None = None) -> tuple[list[np.ndarray], list[int]]:
    """`count` consecutive frames of a video file from index `start` (0-based; None: the last ones).

    Returns the frames as (H, W, 3) uint8 RGB and their indices. With `min_count`, a video that
    ends early gives as few as `min_count` frames. Decodes with OpenCV (FFmpeg inside its wheel)
    only as far as needed. A missing or undecodable file, or a video too short for the request,
    raises `FrameError` naming the file.
    """
    need = count if min_count is None else min(min_count, count)
    from collections import deque

    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    if start is not None and start < 0:
        raise FrameError(f"{path}: start frame must be >= 0, got {start}")
    cv2 = import_cv2(f"reading the video {path}")
    cap = cv2.VideoCapture(str(path))
    kept: deque = deque(maxlen=count)
    n = 0
    try:
        if not cap.isOpened():
            raise FrameError(f"{path}: unreadable video (OpenCV/FFmpeg cannot open it)")
        while start is None or n < start + count:
            ok, frame = cap.read()
            if not ok:
                break
            if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
                raise FrameError(f"{path}: frame {n} has shape {getattr(frame, 'shape', None)}, expected (H, W, 3)")
            if start is None or n >= start:
                kept.append((n, np.ascontiguousarray(frame[..., ::-1])))
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise FrameError(f"{path}: unreadable video (no frame could be decoded)")
    if len(kept) < need:
        if start is None:
            raise FrameError(f"{path}: has {n} frame{'s' * (n != 1)}, need at least {need}")
        raise FrameError(f"{path}: has {n} frame{'s' * (n != 1)}; frames {start}..{start + need - 1} were asked for")
    return [f for _, f in kept], [i for i, _ in kept]


def save_npy(path: str | os.PathLike, arr: np.ndarray, overwrite: bool = True) -> Path:
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return Path(path)

"""Reading frames and videos, writing pictures, arrays and animations (GIF, MP4), with errors
that name the file at fault.

Frames are HWC RGB. Files are written atomically (temporary file beside the target, then
rename), so a failure never leaves a half-written output in place of a good one.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from dmvfn_jax.files import atomic_file
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


def as_image(img) -> np.ndarray:
    """An image as uint8 (H, W, 3): uint8 kept, floats taken as [0, 1] (clipped), grey expanded."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


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
    """Writes frames (uint8, or float in [0, 1]) as a looping GIF (`write_gif`)."""
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


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of a video file as (H, W, 3) uint8 RGB (`load_video_frames` from frame 0 to the end)."""
    return load_video_frames(path, start=0, count=sys.maxsize, min_count=1)[0]


def save_npy(path: str | os.PathLike, arr: np.ndarray, overwrite: bool = True) -> Path:
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return Path(path)


# -- animations -------------------------------------------------------------------------------
def encode_gif(frames: Sequence, fps: float = 4.0) -> bytes:
    """Frames (each an image as `as_image` takes) as the bytes of a looping GIF."""
    from PIL import Image

    imgs = _same_size(frames, "GIF")
    buf = io.BytesIO()
    ims = [Image.fromarray(f) for f in imgs]
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
    return buf.getvalue()


def write_gif(path: str | os.PathLike, frames: Sequence, fps: float = 4.0, overwrite: bool = True) -> Path:
    """Writes frames as a looping GIF, atomically."""
    data = encode_gif(frames, fps)
    with atomic_file(path, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_mp4(path: str | os.PathLike, frames: Sequence, fps: float = 4.0, overwrite: bool = True) -> Path:
    """Writes frames as an MP4 video (MPEG-4 part 2, `mp4v`) with OpenCV's bundled FFmpeg, atomically.

    Odd frame sizes are padded to even ones by repeating the last row / column.
    """
    cv2 = import_cv2("writing MP4 video")
    imgs = _same_size(frames, "MP4")
    h, w = imgs[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    with atomic_file(path, overwrite=overwrite) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (pw, ph))
        try:
            if not writer.isOpened():
                raise InputError(f"{path}: OpenCV cannot open an MP4 writer (mp4v) for {pw}x{ph} frames")
            for img in imgs:
                if (ph, pw) != (h, w):
                    img = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
                writer.write(np.ascontiguousarray(img[..., ::-1]))  # OpenCV takes BGR
        finally:
            writer.release()
        if not Path(tmp).is_file() or Path(tmp).stat().st_size == 0:
            raise InputError(f"{path}: OpenCV wrote no video data")
    return Path(path)


def write_video(path: str | os.PathLike, frames: Sequence, fps: float = 4.0, overwrite: bool = True) -> Path:
    """`write_mp4` or `write_gif`, by the file's suffix (.mp4 / .gif)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, frames, fps, overwrite)
    if suffix == ".gif":
        return write_gif(path, frames, fps, overwrite)
    raise InputError(f"{path}: animations are written as .mp4 or .gif, not {suffix or 'no suffix'!r}")


def _same_size(frames: Sequence, what: str) -> list[np.ndarray]:
    imgs = [as_image(f) for f in frames]
    if not imgs:
        raise ValueError(f"{what}: no frames")
    sizes = {i.shape for i in imgs}
    if len(sizes) > 1:
        raise ValueError(f"{what}: frames differ in size: {sorted(sizes)}")
    return imgs

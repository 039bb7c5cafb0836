"""Pictures of what the model predicts: flows as colours, error and mask maps, strips, GIF and MP4.

    from dmvfn_jax import visualize as viz
    res = predictor.predict_full(prev, cur)
    pic = viz.prediction_strip(prev, cur, res.prediction[0], res.flow[0], res.mask[0], res.gates[0], target=gt)
    viz.write_mp4("rollout.mp4", frames, fps=4)

Everything takes NumPy (or JAX) arrays and returns `uint8` RGB pictures (H, W, 3); images may
be given as uint8 or as floats in [0, 1]. Nothing here reads or writes files: the `write_*`
functions are `image_io`'s, which write atomically (a temporary file beside the target, renamed
onto it when complete), so a failure never leaves a half-written file in place of a good one.

Flow colours follow the colour wheel of the optical-flow literature (Baker et al., "A Database
and Evaluation Methodology for Optical Flow", the Middlebury benchmark): hue is the direction,
saturation the length, white is no motion. Image coordinates: x to the right, y down, so
motion to the right is red, down is yellow, left is cyan and up is blue-violet.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dmvfn_jax import image_io
from dmvfn_jax.image_io import as_image

# The animation writers live with the other file writers in `image_io`; they are also here, as
# `viz.write_mp4(...)` etc., beside the pictures they write.
encode_gif, write_gif, write_mp4, write_video = (
    image_io.encode_gif, image_io.write_gif, image_io.write_mp4, image_io.write_video)

# The 55-colour wheel: (segment length, colour at its start); each segment ramps linearly to the
# next segment's start colour, the last one back to red.
_WHEEL_SEGMENTS = (
    (15, (1.0, 0.0, 0.0)),  # red -> yellow
    (6, (1.0, 1.0, 0.0)),  # yellow -> green
    (4, (0.0, 1.0, 0.0)),  # green -> cyan
    (11, (0.0, 1.0, 1.0)),  # cyan -> blue
    (13, (0.0, 0.0, 1.0)),  # blue -> magenta
    (6, (1.0, 0.0, 1.0)),  # magenta -> red
)


def color_wheel() -> np.ndarray:
    """The (55, 3) colour wheel, floats in [0, 1], starting at red (motion to the right)."""
    rows = []
    for s, (n, start) in enumerate(_WHEEL_SEGMENTS):
        end = _WHEEL_SEGMENTS[(s + 1) % len(_WHEEL_SEGMENTS)][1]
        t = np.arange(n, dtype=np.float64)[:, None] / n
        rows.append((1 - t) * np.asarray(start) + t * np.asarray(end))
    return np.concatenate(rows)


_WHEEL = color_wheel()


def flow_norm(flow) -> float:
    """The largest finite motion length (pixels) in a flow (..., H, W, 2); 0 for an empty flow."""
    f = np.asarray(flow, np.float64)
    n = np.hypot(f[..., 0], f[..., 1])
    n = n[np.isfinite(n)]
    return float(n.max()) if n.size else 0.0


def flow_to_color(flow, max_norm: float | None = None) -> np.ndarray:
    """A flow (..., H, W, 2) in pixels (channel 0 = x, right; 1 = y, down) as uint8 RGB (..., H, W, 3).

    The direction picks the colour on the wheel (interpolated between its 55 colours), the length
    the saturation: zero motion is white, motion of length `max_norm` or more is the pure wheel
    colour. `max_norm` defaults to the largest length in `flow` (give the same value to several
    flows to compare them). Non-finite vectors are drawn as zero motion.
    """
    f = np.asarray(flow, np.float64)
    if f.ndim < 3 or f.shape[-1] != 2:
        raise ValueError(f"flow must be (..., H, W, 2), got shape {f.shape}")
    f = np.where(np.all(np.isfinite(f), axis=-1, keepdims=True), f, 0.0)
    u, v = f[..., 0], f[..., 1]
    scale = flow_norm(f) if max_norm is None else float(max_norm)
    if not scale > 0:
        scale = 1.0  # all-zero flow (or max_norm 0): everything white
    radius = np.clip(np.hypot(u, v) / scale, 0.0, 1.0)
    n = len(_WHEEL)
    # angle of (-u, -v) in [-pi, pi] -> position [0, n) around the wheel; red at motion to the right
    pos = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * n
    k0 = np.floor(pos).astype(np.int64) % n
    k1 = (k0 + 1) % n
    frac = (pos - np.floor(pos))[..., None]
    col = (1 - frac) * _WHEEL[k0] + frac * _WHEEL[k1]
    col = 1.0 - radius[..., None] * (1.0 - col)  # desaturate towards white for short motions
    return np.clip(np.rint(col * 255.0), 0, 255).astype(np.uint8)


def flow_key(size: int = 64) -> np.ndarray:
    """The colour key: a disc whose pixel at offset (dx, dy) from the centre shows flow (dx, dy)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([xx - c, yy - c], axis=-1)
    img = flow_to_color(flow, max_norm=c if c > 0 else 1.0)
    img[np.hypot(xx - c, yy - c) > c + 0.5] = 255
    return img


def error_map(prediction, target, gain: float = 4.0) -> np.ndarray:
    """Per-pixel mean absolute error over the channels, times `gain`, as a heat map (uint8 RGB).

    Black is no error, then red, yellow and white as the error reaches 1 / gain (in [0, 1] units).
    """
    p, t = _unit_float(prediction), _unit_float(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    x = np.clip(np.abs(p - t).mean(axis=-1) * gain, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], axis=-1)
    return np.rint(rgb * 255.0).astype(np.uint8)


def mask_map(mask) -> np.ndarray:
    """The fusion mask (H, W) or (H, W, 1) in [0, 1] as grey uint8 RGB (white: all from warped t-1)."""
    m = np.asarray(mask, np.float32)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W) or (H, W, 1), got shape {m.shape}")
    return as_image(np.clip(m, 0.0, 1.0))


def gates_panel(gates, height: int, width: int) -> np.ndarray:
    """Which blocks ran: one cell per block (filled green: ran, grey: skipped) and the count."""
    from PIL import Image, ImageDraw

    g = np.asarray(gates, np.float32).reshape(-1)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    n = len(g)
    margin = max(2, width // 40)
    cell = max(1, (width - 2 * margin) // max(n, 1))
    side = max(1, min(cell - 1, height // 3))
    top = max(0, (height - side) // 2 - side // 3)
    for i, on in enumerate(g):
        x0 = margin + i * cell
        fill = (46, 160, 67) if on > 0 else (215, 215, 215)
        draw.rectangle([x0, top, x0 + max(side - 1, 0), top + max(side - 1, 0)], fill=fill, outline=(90, 90, 90))
        if side >= 12:
            f = _font(max(8, side // 2))
            draw.text((x0 + side / 2, top + side / 2), str(i), fill=(0, 0, 0), font=f, anchor="mm")
    text = f"{int(np.sum(g > 0))} of {n} blocks ran"
    f = _font(_label_size(height))
    draw.text((width / 2, min(height - 2, top + side + 4)), _fit(draw, text, f, width - 4), fill=(0, 0, 0),
              font=f, anchor="ma")
    return np.asarray(img, dtype=np.uint8).copy()


def image_strip(panels: Sequence, labels: Sequence[str] | None = None, columns: int | None = None,
                gap: int = 4, min_height: int = 0) -> np.ndarray:
    """Panels side by side (wrapped into rows of `columns`), each with its label above it.

    Panels are images (H, W, 3), (H, W, 1) or (H, W), uint8 or floats in [0, 1]; they may differ
    in size (each is centred in a cell of the largest size). Panels lower than `min_height` are
    enlarged by a whole factor (nearest neighbour, so pixels stay visible). White background,
    `gap` pixels between cells. Returns uint8 (H', W', 3).
    """
    from PIL import Image, ImageDraw

    imgs = [as_image(p) for p in panels]
    if not imgs:
        raise ValueError("image_strip: no panels")
    for i, img in enumerate(imgs):
        if img.shape[0] < min_height:
            f = -(-min_height // img.shape[0])
            imgs[i] = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
    if labels is not None and len(labels) != len(imgs):
        raise ValueError(f"image_strip: {len(imgs)} panels but {len(labels)} labels")
    cols = len(imgs) if not columns else max(1, min(int(columns), len(imgs)))
    rows = -(-len(imgs) // cols)
    ch = max(i.shape[0] for i in imgs)
    cw = max(i.shape[1] for i in imgs)
    font_size = _label_size(ch)
    band = font_size + 6 if labels is not None else 0
    out = np.full((rows * (band + ch) + (rows - 1) * gap, cols * cw + (cols - 1) * gap, 3), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        y = r * (band + ch + gap) + band + (ch - img.shape[0]) // 2
        x = c * (cw + gap) + (cw - img.shape[1]) // 2
        out[y:y + img.shape[0], x:x + img.shape[1]] = img
    if labels is not None:
        pic = Image.fromarray(out)
        draw = ImageDraw.Draw(pic)
        f = _font(font_size)
        for i, label in enumerate(labels):
            r, c = divmod(i, cols)
            x = c * (cw + gap) + cw / 2
            draw.text((x, r * (band + ch + gap) + 2), _fit(draw, str(label), f, cw), fill=(0, 0, 0), font=f, anchor="ma")
        out = np.asarray(pic, dtype=np.uint8).copy()
    return out


def prediction_panels(prev, cur, prediction, flow, mask, gates, target=None, max_norm: float | None = None,
                      error_gain: float = 4.0) -> tuple[list[np.ndarray], list[str]]:
    """The panels of one prediction and their labels.

    frame t-1, frame t, prediction, [ground truth, error map], flow to t-1, flow to t, fusion
    mask, the blocks that ran, and the flow colour key. `flow` is (H, W, 4) as
    `InferenceResult.flow` (pixels; [..., 0:2] samples frame t-1, [..., 2:4] frame t), `mask`
    (H, W, 1) the weight of warped frame t-1, `gates` (9,). Both flows share one colour scale
    (`max_norm`, default their largest length), printed on the key.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 4:
        raise ValueError(f"flow must be (H, W, 4), got shape {flow.shape}")
    h, w = flow.shape[:2]
    scale = max(flow_norm(flow[..., 0:2]), flow_norm(flow[..., 2:4])) if max_norm is None else float(max_norm)
    panels = [as_image(prev), as_image(cur), as_image(prediction)]
    labels = ["frame t-1", "frame t", "prediction t+1"]
    if target is not None:
        panels += [as_image(target), error_map(prediction, target, error_gain)]
        labels += ["ground truth t+1", f"|error| x{error_gain:g}"]
    panels += [flow_to_color(flow[..., 0:2], scale), flow_to_color(flow[..., 2:4], scale), mask_map(mask),
               gates_panel(gates, h, w), _key_panel(h, w)]
    labels += ["flow to t-1", "flow to t", "mask (white: t-1)", "blocks", f"flow key ({scale:.1f} px)"]
    return panels, labels


def prediction_strip(prev, cur, prediction, flow, mask, gates, target=None, columns: int | None = 5,
                     max_norm: float | None = None, error_gain: float = 4.0, min_height: int = 128) -> np.ndarray:
    """`prediction_panels` laid out by `image_strip` (two rows of five by default; frames lower
    than `min_height` pixels are enlarged by a whole factor)."""
    flow = np.asarray(flow)
    if flow.ndim == 3 and 0 < flow.shape[0] < min_height:
        # draw the blocks and key panels at the enlarged size, so their text stays legible
        f = -(-min_height // flow.shape[0])
        up = lambda x: None if x is None else np.repeat(np.repeat(np.asarray(x), f, axis=0), f, axis=1)
        prev, cur, prediction, target, mask = up(prev), up(cur), up(prediction), up(target), up(mask)
        flow = up(flow)
    panels, labels = prediction_panels(prev, cur, prediction, flow, mask, gates, target, max_norm, error_gain)
    return image_strip(panels, labels, columns=columns)


def rollout_frames(context: Sequence, predictions: Sequence, truth: Sequence | None = None,
                   min_height: int = 128) -> list[np.ndarray]:
    """Animation frames of a rollout: the context frames, then each prediction (beside its truth).

    Every frame is labelled ("input 1", "prediction t+1", "ground truth t+1", ...); with `truth`,
    each frame has two panels and the context frames are shown in both. Frames lower than
    `min_height` are enlarged by a whole factor.
    """
    frames = []

    def strip(panels, labels):
        frames.append(image_strip(panels, labels, min_height=min_height))

    for i, img in enumerate(context):
        panels = [img, img] if truth is not None else [img]
        strip(panels, [f"input {i + 1}"] * len(panels))
    for k, pred in enumerate(predictions):
        if truth is not None and k < len(truth):
            strip([pred, truth[k]], [f"prediction t+{k + 1}", f"ground truth t+{k + 1}"])
        elif truth is not None:
            strip([pred, np.full_like(as_image(pred), 255)], [f"prediction t+{k + 1}", "(no truth)"])
        else:
            strip([pred], [f"prediction t+{k + 1}"])
    return frames


# -- helpers ---------------------------------------------------------------------------------
def _unit_float(img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32)


def _key_panel(h: int, w: int) -> np.ndarray:
    side = max(8, min(h, w) - 8)
    key = flow_key(side)
    panel = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - key.shape[0]) // 2, (w - key.shape[1]) // 2
    panel[max(y, 0):max(y, 0) + min(h, side), max(x, 0):max(x, 0) + min(w, side)] = key[:min(h, side), :min(w, side)]
    return panel


def _label_size(panel_height: int) -> int:
    return int(np.clip(panel_height // 14, 10, 28))


_FONTS: dict = {}


def _font(size: int):
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)  # FreeType build of Pillow (>= 10.1)
        except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."

"""Frames to files: caption bands drawn with Pillow, GIF (Pillow) or MP4 (imageio) writing.

Shared by ``python -m sb3_vla.record`` and GarmentFold's scripted video; imports nothing from ``sb3_vla``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def caption(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """``frame (H, W, 3)`` uint8 with a black band of text ``lines`` below it (Pillow's default font).

    Example::

        >>> caption(np.zeros((32, 48, 3), np.uint8), ["step 3", "success"]).shape[:2] > (32, 48)
        True
    """
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(img)
    line_h = int(max(probe.textbbox((0, 0), "Ag", font=font)[3] + 3, 12))
    out = Image.new("RGB", (img.width, img.height + line_h * len(lines) + 4), (0, 0, 0))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        draw.text(
            (3, img.height + 2 + i * line_h), _fit(draw, text, font, img.width - 6), fill=(255, 255, 255), font=font
        )
    return np.asarray(out)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def write_video(frames: list[np.ndarray], out: str | Path, fps: int = 10) -> Path:
    """Write RGB frames to a ``.gif`` (Pillow) or ``.mp4`` (imageio with imageio-ffmpeg)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError("no frames to write")
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    elif path.suffix.lower() == ".mp4":
        try:
            import imageio.v2 as imageio
        except ImportError as e:
            raise ValueError(
                "writing .mp4 needs imageio and imageio-ffmpeg (pip install imageio-ffmpeg); or use .gif"
            ) from e
        even: list[Any] = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]  # H.264: even sizes
        imageio.mimsave(path, even, fps=fps, macro_block_size=1)
    else:
        raise ValueError(f"output {str(path)!r} must end in .gif or .mp4")
    return path

"""Counting a line colour's pixels in a PNG: how the browser and plot tests see that a plot was drawn with data."""

from __future__ import annotations

import io

from PIL import Image


def colour_pixels(png: bytes, colour: str, rect: list[float] | None = None, tolerance: int = 30) -> int:
    """Pixels of `colour` (#rrggbb, give or take `tolerance` summed over the channels, for antialiasing), inside
    `rect` (x, y, width, height) when given."""
    target = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if rect is not None:
        x, y, width, height = (round(v) for v in rect)
        image = image.crop((x, y, x + width, y + height))
    return sum(1 for pixel in image.getdata()
               if sum(abs(a - b) for a, b in zip(pixel, target, strict=True)) <= tolerance)

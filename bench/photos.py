"""Real photographs that ordinary packages ship, for the hashing benches.

The fast PDQ path must be measured on camera photographs, not only on scenes we
generate: their texture, noise and low-contrast regions are what move bits. Nothing is
downloaded: every photo here is a file inside an installed package.

- scikit-image's bundled data (only the files in its wheel, never the ones it fetches
  with pooch): astronaut, coffee, chelsea, rocket, camera, coins, moon, the Hubble deep
  field, retina, immunohistochemistry, a clock, the stereo motorcycle, and close-ups of
  grass, gravel and brick.
- scikit-learn's `load_sample_images`: china (a temple) and flower.
- matplotlib's mpl-data/sample_data: grace_hopper and Minduka_Present_Blue_Pack (a
  product shot on transparency, composited on white).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "clock",
    "stereo_motorcycle",
    "grass",
    "gravel",
    "brick",
)


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[2] == 4:  # composite transparency on white, as a browser shows it
        alpha = array[..., 3:4].astype(np.float32) / 255
        array = array[..., :3] * alpha + 255 * (1 - alpha)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


@lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """Every photo, by source and name, as H x W x 3 uint8 RGB."""
    import matplotlib
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    out: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        loaded = getattr(skdata, name)()
        out[f"skimage/{name}"] = _rgb(loaded[0] if isinstance(loaded, tuple) else loaded)
    samples = load_sample_images()
    for path, image in zip(samples.filenames, samples.images, strict=True):
        out[f"sklearn/{Path(path).stem}"] = _rgb(image)
    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with Image.open(sample_data / name) as image:
            out[f"matplotlib/{Path(name).stem}"] = _rgb(np.asarray(image.convert("RGBA")))
    return out


def product_shot(
    photo: np.ndarray, size: tuple[int, int], background: str, rng: np.random.Generator
) -> Image.Image:
    """A product shot: an elliptical cut-out of `photo` on white. `background` is
    "studio" (centred, white falling off towards the corners, with grain), "corner"
    (pure white, the product against the bottom-left corner) or "pure" (pure white,
    centred: padding and the picture's own background cannot be told apart)."""
    width, height = size
    if background == "studio":
        y, x = np.mgrid[0:height, 0:width]
        r2 = ((x - width / 2) / width) ** 2 + ((y - height / 2) / height) ** 2
        plate = 253 - rng.uniform(20, 50) * r2 + rng.normal(0, 1.2, (height, width))
        canvas = np.repeat(np.clip(plate, 0, 255)[..., None], 3, axis=2)
    else:
        canvas = np.full((height, width, 3), 255.0)
    ow, oh = int(width * rng.uniform(0.45, 0.7)), int(height * rng.uniform(0.45, 0.7))
    thing = np.asarray(Image.fromarray(photo).resize((ow, oh), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:oh, 0:ow]
    inside = ((xx - ow / 2) / (ow / 2)) ** 2 + ((yy - oh / 2) / (oh / 2)) ** 2 <= 1
    if background == "corner":
        inside |= (yy > oh / 2) & (xx < ow / 2)
        top, left = height - oh, 0
    else:
        top, left = (height - oh) // 2, (width - ow) // 2
    region = canvas[top : top + oh, left : left + ow]
    region[inside] = thing[inside]
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def dark_edges(photo: np.ndarray, size: tuple[int, int], axis: int) -> Image.Image:
    """`photo` at `size` with its first and last 12 % of rows (axis 0) or columns (1)
    fading to near black, as night skies and vignetted frames do."""
    pixels = np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC), np.float32)
    n = pixels.shape[axis]
    ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.12 * n), 0.03, 1.0)
    shape = (n, 1, 1) if axis == 0 else (1, n, 1)
    return Image.fromarray((pixels * ramp.reshape(shape)).astype(np.uint8))

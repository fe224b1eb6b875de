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

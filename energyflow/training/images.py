"""Image data: scikit-learn's 8 x 8 digits as images, a folder of PNG/JPEG files, an .npy of
shape (N, C, H, W) (a 4-D array is images), MNIST IDX files; class labels from the data or a
``--labels`` file. Every reader returns float32 images (N, C, H, W) and, where known, integer
labels (N,); 8-bit pixels are dequantised to [0, 1): (v + u) / 256 with u uniform.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from energyflow._io import load_npy

DIGITS_IMAGES = "digits-images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IDX_IMAGES, IDX_LABELS = 2051, 2049  # MNIST's magic numbers: uint8 images, uint8 labels

__all__ = [
    "DIGITS_IMAGES",
    "digits_images",
    "is_image_source",
    "read_images",
    "read_labels",
]


def digits_images(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as (1797, 1, 8, 8) images dequantised to [0, 1), and their
    labels 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.images.astype(np.float64)[:, None]
    return ((pixels + rng.random(pixels.shape)) / 17.0).astype(np.float32), digits.target


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _idx_magic(path: Path) -> Optional[int]:
    """The IDX magic number (2051 images, 2049 labels) of ``path``, or None if it is not IDX."""
    try:
        with _open(path) as f:
            head = f.read(4)
    except (OSError, EOFError):
        return None
    if len(head) == 4 and head[:3] == b"\x00\x00\x08" and head[3] in (1, 3):
        return int.from_bytes(head, "big")
    return None


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        magic = int.from_bytes(f.read(4), "big")
        dims = [int.from_bytes(f.read(4), "big") for _ in range(magic & 0xFF)]
        values = np.frombuffer(f.read(), dtype=np.uint8)
    if values.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: the IDX header says {dims} but the file holds {values.size} bytes"
        )
    return values.reshape(dims)


def _npy_dims(path: Path) -> Optional[int]:
    """The number of dimensions of the array in an .npy file (header only), or None."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim
    except (OSError, ValueError, EOFError):
        return None


def is_image_source(name_or_path: str) -> bool:
    """Whether ``--data`` names images: ``digits-images``, a folder, an IDX image file or an
    .npy holding a 4-D array."""
    if name_or_path == DIGITS_IMAGES:
        return True
    path = Path(name_or_path)
    if path.is_dir():
        return True
    if not path.is_file():
        return False
    if path.suffix.lower() == ".npy":
        return _npy_dims(path) == 4
    return _idx_magic(path) == IDX_IMAGES


def _dequantised(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ((values.astype(np.float64) + rng.random(values.shape)) / 256.0).astype(np.float32)


def _read_folder(
    path: Path, image_size: Optional[int], rng: np.random.Generator
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A folder of PNG/JPEG images; in class subfolders (``folder/<class>/*.png``, classes in
    sorted name order) their labels too. Grayscale unless any image has colour."""
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--data {path}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
    parents = sorted({p.parent for p in files})
    labelled = parents != [path]
    if labelled and any(p.parent == path for p in files):
        raise ValueError(
            f"--data {path}: images both in the folder and in subfolders; put every image in a "
            "class subfolder, or all of them in the folder"
        )
    opened = [Image.open(p) for p in files]
    colour = any(im.mode not in ("L", "1", "I", "I;16", "LA") for im in opened)
    arrays, sizes = [], set()
    for file, image in zip(files, opened):
        image = image.convert("RGB" if colour else "L")
        if image_size is not None:
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        sizes.add(image.size)
        if len(sizes) > 1:
            raise ValueError(
                f"--data {path}: images of different sizes ({file.name} is {image.size[0]} x "
                f"{image.size[1]}, others {sorted(sizes)[0]}); pass --image-size S to resize "
                "them all to S x S"
            )
        array = np.asarray(image)
        arrays.append(array.transpose(2, 0, 1) if colour else array[None])
    images = _dequantised(np.stack(arrays), rng)
    if not labelled:
        return images, None
    classes = {parent: k for k, parent in enumerate(parents)}
    return images, np.array([classes[p.parent] for p in files])


def _checked_images(values: np.ndarray, where: str) -> np.ndarray:
    if (
        np.iscomplexobj(values)
        or values.dtype == bool
        or not np.issubdtype(values.dtype, np.number)
    ):
        raise ValueError(f"{where}: expected a numeric image array, got dtype {values.dtype}")
    if values.ndim != 4 or values.size == 0:
        raise ValueError(f"{where}: expected images (N, C, H, W), got shape {values.shape}")
    with np.errstate(over="ignore"):
        cast = values.astype(np.float32)
    bad = ~np.isfinite(cast)
    if bad.any():
        index = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{where}: pixel {index} is {values[index]} (not finite in float32); clean the data"
        )
    return cast


def read_images(
    name_or_path: str, image_size: Optional[int], rng: np.random.Generator
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Images (N, C, H, W) float32 and their labels (N,) or None, from any source that
    ``is_image_source`` accepts. ``image_size`` resizes a folder's images to S x S."""
    if name_or_path == DIGITS_IMAGES:
        images, labels = digits_images(rng)
    else:
        path = Path(name_or_path)
        if path.is_dir():
            images, labels = _read_folder(path, image_size, rng)
        elif path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
            images = _checked_images(values, f"--data {path}")
            if np.issubdtype(values.dtype, np.integer):
                images = _dequantised(values, rng)
            labels = None
        else:  # IDX (N, H, W) uint8
            images, labels = _dequantised(_read_idx(path)[:, None], rng), None
    if image_size is not None and not (
        name_or_path != DIGITS_IMAGES and Path(name_or_path).is_dir()
    ):
        raise ValueError("--image-size resizes a folder of images; this data has a fixed size")
    return images, labels


def read_labels(path: str, flag: str = "--labels", rows: Optional[int] = None) -> np.ndarray:
    """Integer classes (N,) >= 0 from an .npy or an IDX label file (MNIST's); with ``rows``,
    one per image. Errors name ``flag`` and the file."""
    file = Path(path)
    if file.is_file() and _idx_magic(file) == IDX_LABELS:
        labels = _read_idx(file)
    else:
        labels = load_npy(path, flag)
    if labels.ndim != 1 or not len(labels) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{flag} {path}: expected a non-empty 1-D array of integer class labels, one label "
            f"per image; got dtype {labels.dtype} and shape {labels.shape}"
        )
    if rows is not None and len(labels) != rows:
        raise ValueError(
            f"{flag} {path}: expected one label per image, shape ({rows},); got {labels.shape}"
        )
    if labels.min() < 0:
        raise ValueError(f"{flag} {path}: labels must be integers >= 0 (classes 0..K-1)")
    return labels.astype(np.int64)

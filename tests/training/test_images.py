"""Image data: digits-images, image folders (PNG/JPEG, class subfolders), 4-D .npy, MNIST IDX
files, --labels, and the errors each refuses with."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from energyflow.training.data import load_dataset


def _write_idx(path, values: np.ndarray, magic: int, compress: bool = False) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in values.shape)
    payload = header + values.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_digits_images_keep_their_labels():
    plain = load_dataset("digits-images")
    assert plain.images and plain.image_shape == (1, 8, 8) and plain.features == 64
    assert plain.context_train is None and plain.labels_train is not None
    assert 0 <= plain.train.min() and plain.train.max() < 1
    conditional = load_dataset("digits-images", class_conditional=True)
    assert conditional.context_features == 10
    one_hot = conditional.context_train
    assert (one_hot.sum(1) == 1).all() and (one_hot.argmax(1) == conditional.labels_train).all()


def test_npy_of_four_dims_is_images_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    path, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(path, rng.random((30, 3, 4, 6)).astype(np.float64))
    np.save(labels, np.arange(30) % 4)
    data = load_dataset(str(path), labels=str(labels))
    assert data.images and data.image_shape == (3, 4, 6) and data.context_features == 4
    assert len(data.train) + len(data.test) == 30
    # uint8 pixels are dequantised into [0, 1)
    np.save(path, rng.integers(0, 256, (20, 1, 4, 4)).astype(np.uint8))
    data = load_dataset(str(path))
    assert 0 <= data.train.min() and data.train.max() < 1 and data.context_train is None
    with pytest.raises(ValueError, match="one label per image"):
        load_dataset(str(path), labels=str(labels))
    np.save(labels, -np.ones(20, dtype=int))
    with pytest.raises(ValueError, match="integers >= 0"):
        load_dataset(str(path), labels=str(labels))
    with pytest.raises(ValueError, match="needs labels"):
        load_dataset(str(path), class_conditional=True)
    bad = rng.random((20, 1, 4, 4))
    bad[3, 0, 1, 2] = np.nan
    np.save(path, bad)
    with pytest.raises(ValueError, match=r"pixel \(3, 0, 1, 2\)"):
        load_dataset(str(path))


def test_image_folder_with_class_subfolders_and_resizing(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for k in range(6):
            size = (8, 8) if k % 2 else (10, 12)
            pixels = rng.integers(0, 256, size[::-1]).astype(np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / label / f"{k}.png")
    with pytest.raises(ValueError, match="--image-size"):
        load_dataset(str(tmp_path))
    data = load_dataset(str(tmp_path), image_size=8, class_conditional=True)
    assert data.image_shape == (1, 8, 8) and data.context_features == 2
    labels = np.concatenate([data.labels_train, data.labels_test])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6
    # colour images give three channels
    colour = tmp_path / "colour"
    colour.mkdir()
    for k in range(12):
        Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8), "RGB").save(
            colour / f"{k}.jpg"
        )
    assert load_dataset(str(colour)).image_shape == (3, 4, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        load_dataset(str(tmp_path / "empty"))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(2)
    suffix = ".gz" if compress else ""
    images, labels = tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"labels{suffix}"
    _write_idx(images, rng.integers(0, 256, (25, 28, 28)), 2051, compress)
    _write_idx(labels, np.arange(25) % 10, 2049, compress)
    data = load_dataset(str(images), labels=str(labels))
    assert data.image_shape == (1, 28, 28) and data.context_features == 10
    assert 0 <= data.train.min() and data.train.max() < 1


def test_image_flags_on_tables_are_refused():
    with pytest.raises(ValueError, match="--labels applies to image data"):
        load_dataset("moons", labels="y.npy")
    with pytest.raises(ValueError, match="--image-size resizes a folder"):
        load_dataset("digits-images", image_size=4)
    with pytest.raises(ValueError, match="--context-cols"):
        load_dataset("digits-images", context_cols=["0"])


def test_sample_grids_of_any_channel_count(tmp_path):
    from energyflow.training.plots import _mosaic, save_samples_png

    rng = np.random.default_rng(3)
    for shape in ((1, 4, 4), (2, 4, 6), (3, 4, 4)):
        rows = rng.random((30, int(np.prod(shape)))).astype(np.float32)
        path = tmp_path / f"{shape[0]}.png"
        save_samples_png(path, rows, rows, shape, "model", labels=np.arange(30) % 3)
        assert path.read_bytes()[:4] == b"\x89PNG"
    # the mosaic puts each image in its cell, a white (the data's minimum) gap between them
    image = np.arange(16.0).reshape(1, 4, 4)
    canvas = _mosaic([[image.ravel(), None]], (1, 4, 4), low=-1.0, high=15.0)
    assert canvas.shape == (6, 11) and (canvas[1:5, 1:5] == image[0]).all()
    assert (canvas[0] == -1).all() and (canvas[1:5, 6:10] == -1).all()

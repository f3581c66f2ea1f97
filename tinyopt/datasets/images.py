"""A user's image dataset: one folder of images per class, split into train/ and test/ or not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.params import DataParams

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_class_dirs(root: Path) -> tuple[list[np.ndarray], list[int], list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels, shape = [], [], None
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(
                f"{root / name}: a class folder with no images ({', '.join(IMAGE_SUFFIXES)}); add some or "
                "remove the folder"
            )
        for file in files:
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert("L" if image.mode in ("L", "1", "P", "I;16") else "RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"{file}: not a readable image ({exc}); remove or replace it") from None
            if shape is not None and array.shape != shape:
                raise UserError(
                    f"{file}: {array.shape[1]}x{array.shape[0]} pixels, the others are "
                    f"{shape[1]}x{shape[0]}; resize the images to one size"
                )
            shape = array.shape
            images.append(array)
            labels.append(label)
    return images, labels, classes


def load_images(directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
    """One sub-directory of images per class; with train/ and test/ sub-directories, those are the
    split, otherwise `test_fraction` of each class (seeded by file order) is the test set."""
    _refuse_symlink_loops(directory)
    if (directory / "train").is_dir() and (directory / "test").is_dir():
        x_train, y_train, classes = _read_class_dirs(directory / "train")
        x_test, y_test, test_classes = _read_class_dirs(directory / "test")
        if classes != test_classes:
            raise UserError(f"{directory}: train/ and test/ have different class folders ({classes} vs {test_classes})")
        arrays = (x_train, y_train, x_test, y_test)
    else:
        images, labels, classes = _read_class_dirs(directory)
        fraction = params.test_fraction if params else 0.2
        rng = np.random.default_rng(0)
        test = np.zeros(len(images), dtype=bool)
        for label in set(labels):
            members = np.flatnonzero(np.asarray(labels) == label)
            test[rng.choice(members, size=max(1, int(round(len(members) * fraction))), replace=False)] = True
        arrays = (
            [i for i, t in zip(images, test, strict=False) if not t],
            [label for label, t in zip(labels, test, strict=False) if not t],
            [i for i, t in zip(images, test, strict=False) if t],
            [label for label, t in zip(labels, test, strict=False) if t],
        )
    if len(classes) < 2 or not arrays[0] or not arrays[2]:
        raise UserError(f"{directory}: needs at least two class folders with images in both splits")
    x_train, y_train, x_test, y_test = arrays
    return np.stack(x_train), np.asarray(y_train), np.stack(x_test), np.asarray(y_test)


def _refuse_symlink_loops(root: Path) -> None:
    """A link to a folder that holds it makes copying the directory endless (shutil.copytree follows
    links); a link that loops or points nowhere is no image either. Say which link, once."""
    for folder, dirs, files in os.walk(root):  # os.walk itself does not follow links
        for name in dirs + files:
            link = Path(folder) / name
            if not link.is_symlink():
                continue
            try:
                target = link.resolve(strict=True)
            except (OSError, RuntimeError):
                raise UserError(f"{link}: a symbolic link that loops or points nowhere; remove it") from None
            inside = Path(folder).resolve()
            if target == inside or target in inside.parents:
                raise UserError(
                    f"{link}: a symbolic link to {target}, a folder that contains it (a loop); remove the link"
                )

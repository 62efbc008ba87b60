"""Where images come from: an ImageFolder directory, a .tar.gz of one, or CIFAR's pickle batches.

Small images are decoded once into a uint8 tensor (N, 3, H, W) and cached on disk; large ones stay as
file lists for DataLoader workers.

Example:
    >>> data = load_dataset("../shared/data/cifar10-train-jpg.tar.gz")
    >>> data.images.shape, data.classes[:2]
    (torch.Size([50000, 3, 32, 32]), ['airplane', 'automobile'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import tarfile
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from resnets.atomic import atomic_write
from resnets.errors import SKIP_HINT, ResnetsError, first_line
from resnets.safe_pickle import ArrayUnpickler, RefusedGlobal

# Folders that name a split rather than a class: train/, and val/ or test/ (the validation set).
SPLIT_FOLDERS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SMALL_SIDE = 64  # images up to this side are decoded once into memory; larger ones stream through workers
CACHE_LIMIT_BYTES = 2 * 2**30  # decoded sets kept beyond it are removed, least recently used first (CIFAR: 154 MB)
CACHE_VERSION = "2"  # 2: an archive's class is the first folder under its split (was: the image's own folder)


class DataError(ResnetsError, ValueError):
    """Data that cannot be used: one line says which file or folder and why."""


@dataclasses.dataclass
class ImageSet:
    """Images with integer labels: decoded (`images`, uint8 N x 3 x H x W) or as `files` for workers."""

    classes: list[str]
    labels: torch.Tensor
    images: torch.Tensor | None = None
    files: list[str] | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        files = [self.files[i] for i in indices.tolist()] if self.files is not None else None
        images = self.images[indices] if self.images is not None else None
        return ImageSet(self.classes, self.labels[indices], images, files)


def decode_image(data: bytes | str | Path, name: str) -> Image.Image:
    """An RGB image (grayscale, palette and RGBA converted); a clear error naming `name` if unreadable."""
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 megapixels and refuses above twice that (a decompression bomb): the refusal is
            # one line below; a large photo under it is decoded without a warning spilling over the output.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            image.load()
        # a photo is shown upright by its EXIF orientation; its pixels may be stored on their side
        ImageOps.exif_transpose(image, in_place=True)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{name}: unreadable image ({first_line(error)})") from None
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float: scale to 8 bits before RGB
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = _full_scale(image.mode, float(array.max()), name)
        image = Image.fromarray((np.clip(array, 0, top) * (255.0 / top)).round().astype(np.uint8))
    return image.convert("RGB")


def _full_scale(mode: str, brightest: float, name: str) -> float:
    """The value that stands for white in a 16/32-bit or float image: its bit depth's, never the image's own
    brightest pixel (that would brighten a dark image, and the same scene saved at 8 and 16 bits would differ)."""
    if mode.startswith("I;16") or (mode == "I" and brightest <= 65535):  # 16-bit, or 16-bit data read as 32-bit
        return 65535.0
    if mode == "I":
        return float(2**31 - 1)
    if brightest <= 1.0:  # float images hold 0..1, or 0..255 where they were saved from 8-bit data
        return 1.0
    if brightest <= 255.0:
        return 255.0
    raise DataError(f"{name}: a float image with values up to {brightest:g}; expected 0..1 (or 0..255)")


def images_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files under `folder` and its subfolders, sorted, and the other files there, left out by their suffix
    (hidden ones aside). Linked folders are followed, each once; a link whose target is gone stays in, to be named
    when it is read, rather than shrink the data unsaid.

    Example:
        >>> images, others = images_under(Path("photos"))
    """
    images, others, seen = [], [], set()
    for where, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if real in seen:  # a link back to a folder already walked
            folders.clear()
            continue
        seen.add(real)
        for name in files:
            path = Path(where) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(path)
            elif not name.startswith("."):
                others.append(path)
    return sorted(images), sorted(others)


def warn_left_out(others: list[Path], where: str | Path) -> None:
    """One warning naming the files a folder held that are not images by their suffix: none is dropped unsaid."""
    if others:
        suffixes = sorted({path.suffix.lower() or path.name for path in others})
        listed = ", ".join(suffixes[:5]) + (", …" if len(suffixes) > 5 else "")
        count = f"{len(others)} files that are not images" if len(others) > 1 else "1 file that is not an image"
        warnings.warn(f"{where}: left out {count} by its suffix ({listed})", stacklevel=3)


def _folder_entries(root: Path) -> list[tuple[str, str]]:
    """(relative file name, class) for an ImageFolder directory."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries, left_out = [], []
    for name in classes:
        if not os.access(root / name, os.R_OK | os.X_OK):
            raise DataError(f"{root / name}: class folder cannot be read (permissions)")
        found, others = images_under(root / name)
        if not found and len(classes) > 1:  # torchvision's ImageFolder refuses an empty class too
            raise DataError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        entries += [(str(file), name) for file in found]
        left_out += others
    warn_left_out(left_out, root)
    return entries


def _check_classes(entries: list[tuple[str, str]], where: str) -> list[str]:
    classes = sorted({label for _, label in entries})
    if not entries:
        raise DataError(f"{where}: no images found (expected an ImageFolder layout: {where}/<class>/<image>)")
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]}); a classifier needs at least two")
    return classes


def _decode_all(items, classes: list[str], skip_bad: bool, where: str) -> ImageSet:
    """Decode (name, bytes-or-path, class) items into one uint8 tensor."""
    index = {name: i for i, name in enumerate(classes)}
    arrays, labels, skipped = [], [], 0
    for name, data, label in items:
        try:
            arrays.append(np.asarray(decode_image(data, name)))
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{error} ({SKIP_HINT})") from None
            skipped += 1
            continue
        labels.append(index[label])
    if not arrays:
        raise DataError(f"{where}: no readable images")
    sizes = Counter(a.shape[:2] for a in arrays)
    size = sizes.most_common(1)[0][0]
    if len(sizes) > 1:  # a few odd sizes: resize them to the common one
        arrays = [a if a.shape[:2] == size else np.asarray(Image.fromarray(a).resize(size[::-1])) for a in arrays]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(classes, torch.tensor(labels), images=images, skipped=skipped)


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        parts = [f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    else:
        parts = [f"{stat.st_size}:{stat.st_mtime_ns}"]
    return hashlib.sha256("\n".join([CACHE_VERSION, str(path.resolve()), *parts]).encode()).hexdigest()[:16]


def _pack(data: ImageSet | None) -> dict | None:
    if data is None:
        return None
    return dict(classes=data.classes, labels=data.labels, images=data.images, skipped=data.skipped)


def _unpack(saved: dict | None) -> ImageSet | None:
    if saved is None:
        return None
    return ImageSet(saved["classes"], saved["labels"], images=saved["images"], skipped=saved["skipped"])


def _cached(path: Path, cache_dir: Path | None, build, skip_bad: bool) -> tuple[ImageSet, ImageSet | None]:
    """Decode once; later runs read the uint8 tensors from the cache (keyed by the files' names, sizes, times)."""
    if cache_dir is None:
        return build()
    cache = cache_dir / f"{path.name}-{_fingerprint(path)}{'-skip' if skip_bad else ''}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            with contextlib.suppress(OSError):  # a read-only cache still serves
                os.utime(cache)  # recently used: pruning takes the others first
            return _unpack(saved["train"]), _unpack(saved["val"])
        except Exception as error:  # noqa: BLE001 - our own cache: whatever broke it, decoding again mends it
            reason = first_line(error)
            warnings.warn(f"{cache}: damaged decoded-image cache ({reason}); decoding the images again", stacklevel=2)
    train, val = build()
    if train.images is not None:
        try:
            atomic_write(cache, lambda temporary: torch.save(dict(train=_pack(train), val=_pack(val)), temporary))
        except OSError as error:  # a cache is an optimisation: a full or read-only disk costs the next run a decode
            warnings.warn(f"decoded images not cached ({first_line(error)})", stacklevel=2)
        prune_cache(cache_dir, keep=cache)
    return train, val


def prune_cache(cache_dir: Path, keep: Path, limit_bytes: int = CACHE_LIMIT_BYTES) -> list[Path]:
    """Remove the least recently used decoded sets until the cache holds at most `limit_bytes` (`keep`, the set
    just written, stays). Entries are keyed by the files' paths and times, so a data set copied again (a new clone,
    a fresh download) leaves its old entry unused: without this the cache only grows. Returns what was removed.

    Example:
        >>> prune_cache(cache_dir, keep=cache_dir / "cifar10-train-jpg.tar.gz-5d108d27eeaa714b.pt")
        [PosixPath('.../cifar10-train-jpg.tar.gz-57495bf275c76e51.pt')]
    """
    entries = []
    for entry in cache_dir.glob("*.pt"):
        with contextlib.suppress(FileNotFoundError):  # another process may prune beside us
            info = entry.stat()
            entries.append((entry != keep, -info.st_mtime, info.st_size, entry))
    removed, total = [], 0
    for other, _, size, entry in sorted(entries):  # `keep` first, then the most recently used
        total += size
        if other and total > limit_bytes:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _read_tar(path: Path, skip_bad: bool) -> tuple[ImageSet, ImageSet | None]:
    """An archive of an ImageFolder (optionally under train/ and val/), read without extracting."""
    splits: dict[str, list[tuple[str, bytes, str]]] = {"train": [], "val": []}
    try:
        with tarfile.open(path) as archive:
            images = [
                (member, Path(member.name).parts)
                for member in archive
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES
            ]
            wrapper = _wrapper_depth([parts for _, parts in images])
            for member, parts in images:
                parts = parts[wrapper:]
                if len(parts) < 2:
                    continue  # an image beside the class folders belongs to none
                split = "val" if parts[0] in SPLIT_FOLDERS[1:] and len(parts) >= 3 else "train"
                label = parts[1] if parts[0] in SPLIT_FOLDERS and len(parts) >= 3 else parts[0]
                data = archive.extractfile(member).read()
                splits[split].append((f"{path}:{member.name}", data, label))
            _check_archive_end(archive, path)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: unreadable archive ({error})") from None
    if not splits["train"]:  # only val/ or test/: an evaluation set, read as the data itself
        splits = {"train": splits["val"], "val": []}
    classes = _check_classes([(n, c) for n, _, c in splits["train"]], str(path))
    train = _decode_all(splits["train"], classes, skip_bad, str(path))
    unknown = sorted({c for _, _, c in splits["val"]} - set(classes))
    if unknown:
        raise DataError(f"{path}: val/ holds classes that train/ does not: {', '.join(unknown[:5])}")
    val = _decode_all(splits["val"], classes, skip_bad, f"{path}:val") if splits["val"] else None
    return train, val


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _wrapper_depth(paths: list[tuple[str, ...]]) -> int:
    """1 where every image sits under one folder that only wraps the layout (`cifar10/train/<class>/...`,
    `cifar10-test/<class>/...`), else 0."""
    tops = {parts[0] for parts in paths}
    wrapped = len(tops) == 1 and tops.isdisjoint(SPLIT_FOLDERS) and all(len(parts) >= 3 for parts in paths)
    return 1 if wrapped else 0


def _check_archive_end(archive: tarfile.TarFile, path: Path) -> None:
    """tarfile stops quietly at a damaged header, as if the archive ended there: what follows the last member must
    be the zero blocks that end a tar, and a compressed stream must end whole (its checksum is read at the end)."""
    while chunk := archive.fileobj.read(1 << 20):
        if chunk.strip(b"\0"):
            last = archive.members[-1].name if archive.members else "the start"
            raise DataError(f"{path}: damaged archive: what follows {last} cannot be read as tar entries")


def _read_cifar_pickles(root: Path) -> tuple[ImageSet, ImageSet | None]:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) in torchvision's pickle layout. The test
    batch alone is an evaluation set, read as the data itself; training batches alone leave the hold-out to the
    caller."""

    def load(file: Path) -> dict:
        try:
            with file.open("rb") as handle:
                raw = ArrayUnpickler(handle, encoding="bytes").load()
        except OSError as error:
            raise DataError(f"{file}: cannot be read ({error.strerror or error})") from None
        except RefusedGlobal as error:
            raise DataError(f"{file}: refused: {error}; nothing in it was run") from None
        except Exception as error:  # noqa: BLE001 - whatever the unpickler meets, the file is named
            # pickle's own period dropped inside our brackets, as the Paddle reader does
            raise DataError(f"{file}: unreadable CIFAR batch ({first_line(error).rstrip('.')})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{file}: not a CIFAR batch (a {type(raw).__name__}, not a dict of data and labels)")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}

    if (root / "batches.meta").exists() or (root / "data_batch_1").exists():
        train_files, test_files = [root / f"data_batch_{i}" for i in range(1, 6)], [root / "test_batch"]
        missing = [f.name for f in train_files if not f.exists()]
        if missing and len(missing) < len(train_files):  # a batch lost in a copy would train on part of the data
            raise DataError(f"{root}: {', '.join(missing)} missing (CIFAR-10's training set is data_batch_1..5)")
        meta, label_key, names_key = load(root / "batches.meta"), "labels", "label_names"
    else:
        train_files, test_files = [root / "train"], [root / "test"]
        meta, label_key, names_key = load(root / "meta"), "fine_labels", "fine_label_names"
    train_files, test_files = [f for f in train_files if f.exists()], [f for f in test_files if f.exists()]
    if names_key not in meta:
        raise DataError(f"{root}: its meta file names no classes (no {names_key!r})")
    classes = [c.decode() if isinstance(c, bytes) else c for c in meta[names_key]]

    def read(files: list[Path]) -> ImageSet:
        images, labels = [], []
        for file in files:
            batch = load(file)
            try:
                data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                targets = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
            except (KeyError, ValueError, TypeError) as error:
                raise DataError(f"{file}: not a CIFAR batch of 32x32 images ({error})") from None
            if len(targets) != len(data):
                raise DataError(f"{file}: {len(data)} images but {len(targets)} labels")
            if len(targets) and not (targets.min() >= 0 and targets.max() < len(classes)):
                raise DataError(f"{file}: labels outside 0..{len(classes) - 1}, the classes its meta names")
            images.append(data)
            labels.append(targets)
        return ImageSet(
            classes, torch.from_numpy(np.concatenate(labels)), images=torch.from_numpy(np.concatenate(images).copy())
        )

    if not train_files:
        return read(test_files), None
    return read(train_files), read(test_files) if test_files else None


def _is_small(files: list[str], skip_bad: bool) -> bool:
    """Whether the first readable image is small enough to decode the whole set into memory."""
    for file in files:
        try:
            return max(decode_image(Path(file), file).size) <= SMALL_SIDE
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{error} ({SKIP_HINT})") from None
    raise DataError(f"{Path(files[0]).parent.parent}: no readable images")


def load_dataset(
    path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, skip_bad_images: bool = False
) -> tuple[ImageSet, ImageSet | None]:
    """(train, val-or-None) from an ImageFolder dir, a `.tar.gz` of one, or a CIFAR pickle dir.

    A `val/` (or `test/`) folder beside `train/` becomes the validation set; otherwise the caller splits. A `val/` or
    `test/` alone is an evaluation set, read as the data itself; one folder that wraps the layout is looked into. A
    class is the first folder under the split (or the root), its images found at any depth below it, as torchvision's
    ImageFolder reads a folder.
    Unreadable images raise a DataError naming the file, or are skipped and counted with `skip_bad_images`.
    """
    path = Path(path)
    cache = Path(cache_dir) if cache_dir is not None else None
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DataError(f"{path}: not a folder or a tar archive of images")
        return _cached(path, cache, lambda: _read_tar(path, skip_bad_images), skip_bad_images)
    for name in ("cifar-10-batches-py", "cifar-100-python"):
        if (path / name).is_dir():
            path = path / name
    cifar10 = any((path / name).is_file() for name in ("data_batch_1", "test_batch"))
    if cifar10 or (path / "meta").is_file() and any((path / name).is_file() for name in ("train", "test")):
        return _read_cifar_pickles(path)
    subfolders = _subfolders(path)
    if len(subfolders) == 1 and subfolders[0].name not in SPLIT_FOLDERS and any(_subfolders(subfolders[0])):
        # a folder that only wraps the layout
        return load_dataset(subfolders[0], cache_dir=cache_dir, skip_bad_images=skip_bad_images)
    train_root = path / "train" if (path / "train").is_dir() else path
    val_root = next((path / n for n in SPLIT_FOLDERS[1:] if (path / n).is_dir()), None)
    if train_root == path and val_root is not None and {p.name for p in subfolders} <= set(SPLIT_FOLDERS):
        train_root, val_root = val_root, None  # only val/ or test/: an evaluation set, read as the data itself

    def folder(root: Path) -> ImageSet:
        entries = _folder_entries(root)
        classes = _check_classes(entries, str(root))
        if not _is_small([f for f, _ in entries], skip_bad_images):
            index = {c: i for i, c in enumerate(classes)}
            return ImageSet(classes, torch.tensor([index[c] for _, c in entries]), files=[f for f, _ in entries])
        items = ((f, Path(f), c) for f, c in entries)
        build = lambda: (_decode_all(items, classes, skip_bad_images, str(root)), None)  # noqa: E731
        return _cached(root, cache, build, skip_bad_images)[0]

    train = folder(train_root)
    val = folder(val_root) if val_root is not None else None
    if val is not None and val.classes != train.classes:
        raise DataError(f"{val_root}: classes differ from {train_root}'s")
    return train, val


def stratified_split(data: ImageSet, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """A fixed, stratified hold-out: the same `val_fraction` of every class, chosen by `seed`.

    Example:
        >>> train, val = stratified_split(cifar10_train)  # 45,000 / 5,000, 500 per class
    """
    if not 0 < val_fraction < 1:  # 2.0 would hold out everything and score the training images as "val"
        raise ValueError(f"val_fraction={val_fraction} must lie between 0 and 1")
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for label in range(len(data.classes)):
        members = torch.nonzero(data.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(len(members) * val_fraction)
        val_parts.append(members[:count])
        train_parts.append(members[count:])
    train_idx, val_idx = torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values
    return data.subset(train_idx), data.subset(val_idx)

"""Data sources, the fixed split, batch augmentation, and bad images named in one-line errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data import DataError, TensorBatches, cutout, load_dataset, pad_crop_flip, stratified_split

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"
FULL = ROOT.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"


def make_folder(root: Path, classes=("cat", "dog"), per_class=4, size=32, mode="RGB") -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).convert(mode).save(root / name / f"{i}.png")
    return root


def test_sample_archive_reads_as_a_stratified_cifar_sample(tmp_path):
    train, val = load_dataset(SAMPLE, cache_dir=tmp_path)
    assert val is None and train.images.shape == (1000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.bincount(train.labels).tolist() == [100] * 10
    again, _ = load_dataset(SAMPLE, cache_dir=tmp_path)  # from the cache
    assert torch.equal(again.images, train.images) and list(tmp_path.glob("*.pt"))


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used(tmp_path):
    from resnets.data.sources import prune_cache

    for age, name in enumerate(("newest", "middle", "oldest")):  # 100 bytes each, older and older
        entry = tmp_path / f"{name}.pt"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1e9 - age * 1000, 1e9 - age * 1000))
    (tmp_path / "notes.txt").write_bytes(b"y" * 1000)  # not a cache entry: never touched
    just_written = tmp_path / "oldest.pt"  # what a run just wrote stays, whatever its time
    assert prune_cache(tmp_path, keep=just_written, limit_bytes=250) == [tmp_path / "middle.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest.pt", "notes.txt", "oldest.pt"]
    # a cache hit marks its entry as recently used
    load_dataset(SAMPLE, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("cifar10-sample*.pt")
    os.utime(entry, (1e9 - 5000, 1e9 - 5000))
    load_dataset(SAMPLE, cache_dir=tmp_path)
    assert entry.stat().st_mtime > 1e9


def test_full_cifar10_split_is_fixed_and_stratified():
    train, _ = load_dataset(FULL, cache_dir=Path.home() / ".cache" / "resnets")
    fit, val = stratified_split(train, 0.1, seed=0)
    assert (len(fit), len(val)) == (45_000, 5_000)
    assert torch.bincount(val.labels).tolist() == [500] * 10
    _, val_again = stratified_split(train, 0.1, seed=0)
    assert torch.equal(val.images, val_again.images)


def test_grayscale_rgba_and_palette_images_become_rgb(tmp_path):
    make_folder(tmp_path / "a", classes=("x",), mode="L")
    make_folder(tmp_path / "a", classes=("y",), mode="RGBA")
    make_folder(tmp_path / "a", classes=("z",), mode="P")
    train, _ = load_dataset(tmp_path / "a")
    assert train.images.shape == (12, 3, 32, 32)


def test_val_folder_is_used_when_present(tmp_path):
    make_folder(tmp_path / "d" / "train")
    make_folder(tmp_path / "d" / "val", per_class=2)
    train, val = load_dataset(tmp_path / "d")
    assert (len(train), len(val)) == (8, 4) and val.classes == train.classes


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken.png: unreadable image"):
        load_dataset(root)
    train, _ = load_dataset(root, skip_bad_images=True)
    assert len(train) == 8 and train.skipped == 1


@pytest.mark.parametrize(
    "layout, message",
    [("empty", "no images found"), ("one_class", "only one class")],
)
def test_empty_or_one_class_folder_is_a_clear_error(tmp_path, layout, message):
    root = tmp_path / "d"
    root.mkdir()
    if layout == "one_class":
        make_folder(root, classes=("cat",))
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_cifar_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    train, test = load_dataset(tmp_path)
    assert (len(train), len(test)) == (100, 20) and train.classes[0] == "c0"
    assert train.images.shape == (100, 3, 32, 32)


def test_pad_crop_flip_takes_a_crop_of_the_padded_image():
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    out = pad_crop_flip(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):
        crops = [padded[i, :, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)
    flips = sum(
        not any(torch.equal(out[i], padded[i, :, y : y + 32, x : x + 32]) for y in range(9) for x in range(9))
        for i in range(16)
    )
    assert 0 < flips < 16


def test_pad_crop_flip_follows_its_draws_so_that_runs_resume_on_the_same_batches():
    # Runs in progress resume across versions: the crop at (dy, dx) and the flip must stay the generator's draws,
    # in this order, whatever way the crops are cut.
    images = torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8)
    out = pad_crop_flip(images, torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)
    dy, dx = torch.randint(0, 9, (32,), generator=draws), torch.randint(0, 9, (32,), generator=draws)
    flip = torch.rand(32, generator=draws) < 0.5
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(32):
        crop = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)


def test_cutout_hides_one_square_per_image_at_the_mean_colour():
    images = torch.randn(64, 3, 32, 32).abs() + 1  # nothing is 0 before
    out = cutout(images, 16, torch.Generator().manual_seed(0))
    hidden = (out == 0).all(dim=1)  # every channel of a hidden pixel is 0
    assert torch.equal(out.ne(0), hidden[:, None].logical_not().expand_as(out))  # all channels, or none
    counts = hidden.sum(dim=(1, 2))
    assert counts.max() == 16 * 16 and 0 < counts.min() < 16 * 16  # whole inside; cut by an edge near one
    rows, cols = hidden.any(2), hidden.any(1)
    assert torch.equal(counts, rows.sum(1) * cols.sum(1))  # one rectangle (a square clipped by the edges)


def test_cutout_batches_keep_the_crops_and_stay_deterministic():
    train, _ = load_dataset(SAMPLE)
    plain = TensorBatches(train, 100, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=3)
    hidden = TensorBatches(train, 100, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=3, cutout=16)
    a, b = next(iter(plain.epoch(1)))[0], next(iter(hidden.epoch(1)))[0]
    assert torch.equal(a[b != 0], b[b != 0])  # the same crops and flips, with squares hidden
    assert (b == 0).float().mean() > 0.1
    assert torch.equal(b, next(iter(hidden.epoch(1)))[0])


def test_each_rank_gets_its_slice_of_one_process_augmented_batch():
    train, _ = load_dataset(SAMPLE)
    kwargs = dict(batch_size=100, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=3, cutout=16)
    whole = next(iter(TensorBatches(train, **kwargs).epoch(1)))
    ranks = [next(iter(TensorBatches(train, rank=r, world_size=2, **kwargs).epoch(1))) for r in range(2)]
    assert all(len(images) == 50 for images, _ in ranks)
    assert torch.equal(torch.cat([images for images, _ in ranks]), whole[0])
    assert torch.equal(torch.cat([labels for _, labels in ranks]), whole[1])


def test_batches_are_made_on_the_device_that_holds_the_images():
    # "meta" stands in for a GPU: an augmentation step that left a tensor on the CPU would raise here.
    train, _ = load_dataset(SAMPLE)
    kwargs = dict(batch_size=100, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=3, cutout=16)
    images, labels = next(iter(TensorBatches(train, device="meta", **kwargs).epoch(1)))
    assert (images.device.type, labels.device.type) == ("meta", "meta")
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.float32


def test_batches_are_deterministic_and_resumable():
    train, _ = load_dataset(SAMPLE)
    batches = TensorBatches(train, 100, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=3)
    full = list(batches.epoch(2))
    tail = list(batches.epoch(2, start=4))
    assert len(full) == 10 and all(torch.equal(a[0], b[0]) for a, b in zip(full[4:], tail, strict=True))
    assert not torch.equal(full[0][0], next(iter(batches.epoch(3)))[0])


def test_predict_names_each_bad_file_and_classifies_the_rest(tmp_path, capsys):
    from resnets.weights import save_safetensors

    model = __import__("resnets").create_model("resnet20", depth=8)
    meta = {"classes": json.dumps([f"c{i}" for i in range(10)]), "mean": "[0.5,0.5,0.5]", "std": "[0.25,0.25,0.25]"}
    meta["model_overrides"] = json.dumps({"depth": 8})
    weights = save_safetensors(model.state_dict(), tmp_path / "w.safetensors", meta)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(good)
    text = tmp_path / "text.jpg"
    text.write_text("this is not a picture")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(deep)
    missing = tmp_path / "missing.jpg"
    files = [str(p) for p in (good, text, tiny, deep, missing)]
    status = main(["predict", "--model", "resnet20", "--weights", str(weights), "--json", *files])
    captured = capsys.readouterr()
    results = {Path(r["file"]).name: r for r in json.loads(captured.out)}
    assert status == 1
    assert "top" in results["good.png"] and "top" in results["deep.png"]  # 16-bit PNGs are scaled to 8 bits
    assert "unreadable image" in results["text.jpg"]["error"]
    assert "too small" in results["tiny.png"]["error"]
    assert "no such file" in results["missing.jpg"]["error"]
    assert len(captured.err.strip().splitlines()) == 3


def test_predict_reads_folders_in_order_and_batch_by_batch(tmp_path, capsys):
    from resnets.deploy.predict import PREDICT_BATCH, Predictor
    from resnets.weights import save_safetensors

    model = __import__("resnets").create_model("resnet20", depth=8)
    meta = {"model": "resnet20", "model_overrides": json.dumps({"depth": 8}), "mean": "[0.5,0.5,0.5]"}
    weights = save_safetensors(model.state_dict(), tmp_path / "w.safetensors", meta)
    photos = make_folder(tmp_path / "photos", classes=("a", "b/deeper"), per_class=PREDICT_BATCH // 2 + 3)
    (tmp_path / "empty").mkdir()
    # --model left out: the weights name their net
    assert main(["predict", "--weights", str(weights), "--json", str(photos), str(tmp_path / "empty")]) == 1
    results = json.loads(capsys.readouterr().out)
    files = sorted(str(p) for p in photos.rglob("*.png"))
    assert [r["file"] for r in results] == [*files, str(tmp_path / "empty")]  # more than one batch, in order
    assert "no images in it" in results[-1]["error"]
    predictor = Predictor.load(None, weights=weights)
    alone = [predictor.predict_files([file])[0]["top"] for file in (files[0], files[-1])]
    for single, batched in zip(alone, (results[0]["top"], results[len(files) - 1]["top"]), strict=True):
        assert [t["class"] for t in single] == [t["class"] for t in batched]
        assert [t["probability"] for t in single] == pytest.approx([t["probability"] for t in batched], abs=1e-5)


def _archive(root: Path, names: list[str]) -> Path:
    """A .tar.gz holding a small PNG under each of `names`."""
    import tarfile

    image = root / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    archive = root / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            tar.add(image, arcname=name)
    return archive


@pytest.mark.parametrize(
    "names, train_classes, val_count",
    [
        # only test/: an evaluation set, read as the data itself (what `resnets eval --data` is given)
        (["test/cat/0.png", "test/cat/1.png", "test/dog/0.png"], {"cat": 2, "dog": 1}, None),
        # one folder wrapping train/ and test/: test images are not merged into training
        (
            ["cifar/train/cat/0.png", "cifar/train/dog/0.png", "cifar/test/cat/0.png", "cifar/test/dog/0.png"],
            {"cat": 1, "dog": 1},
            2,
        ),
        # a wrapping folder of classes, and a class with images in subfolders (torchvision's ImageFolder)
        (["c10-test/cat/0.png", "c10-test/dog/a/0.png", "c10-test/dog/b/0.png"], {"cat": 1, "dog": 2}, None),
    ],
)
def test_archive_and_folder_layouts_read_as_torchvision_would(tmp_path, names, train_classes, val_count):
    import tarfile

    archive = _archive(tmp_path, names)
    folder = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    for data in (archive, folder):
        train, val = load_dataset(data)
        counts = torch.bincount(train.labels, minlength=len(train.classes)).tolist()
        assert dict(zip(train.classes, counts, strict=True)) == train_classes, data
        assert (None if val is None else len(val)) == val_count, data


def test_cifar_pickles_test_batch_alone_is_an_evaluation_set(tmp_path):
    rng = np.random.default_rng(0)
    meta = {b"label_names": [b"cat", b"dog"]}

    def batch(count: int) -> dict:
        return {b"data": rng.integers(0, 255, (count, 3072), dtype=np.uint8), b"labels": [0, 1] * (count // 2)}

    both = tmp_path / "cifar-10-batches-py"
    both.mkdir()
    training = [f"data_batch_{i}" for i in range(1, 6)]
    for name, content in (("batches.meta", meta), *((name, batch(2)) for name in training), ("test_batch", batch(4))):
        (both / name).write_bytes(pickle.dumps(content))
    train, test = load_dataset(tmp_path)
    assert (len(train), len(test), train.classes) == (10, 4, ["cat", "dog"])
    (both / "data_batch_3").unlink()  # one lost in a copy: never read in part
    with pytest.raises(DataError, match="data_batch_3 missing"):
        load_dataset(both)
    for name in training:  # what `resnets eval --data` is given: the test batch alone
        (both / name).unlink(missing_ok=True)
    alone, none = load_dataset(both)
    assert none is None and len(alone) == 4 and torch.equal(alone.images, test.images)
    (both / "test_batch").unlink()
    for name in training:  # training batches alone: the caller holds some out
        (both / name).write_bytes(pickle.dumps(batch(2)))
    train, none = load_dataset(both)
    assert none is None and len(train) == 10
    for name in training:
        (both / name).unlink()
    with pytest.raises(DataError, match="no images found"):  # a meta file alone: nothing to read
        load_dataset(both)

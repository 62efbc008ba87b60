"""Bad input loses nothing and is never silently wrong: one line, exit 2, and every file left as it was."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from resnets.cli import main
from resnets.data import DataError, load_dataset
from resnets.inference.optimize import optimize_for_inference
from resnets.models import create_model
from resnets.weights import WeightsError, load_weights

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"
# `resnets train` at its smallest: an 8-layer net, two short epochs on the embedded sample.
TRAIN = ["train", "--model", "resnet20", "--set", "depth=8", "--recipe", "cifar-fast", "--no-progress"]
TINY = ["--batch-size", "60", "--warmup-iterations", "5", "--log-every", "0"]


def run(argv: list[str]) -> int:
    """The exit status of `resnets ARGV`, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its content hash: what must not change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    assert all(fragment in err[-1] for fragment in fragments), err[-1]


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory) -> Path:
    """The embedded sample unpacked as an ImageFolder (train/<class>/<image>)."""
    root = tmp_path_factory.mktemp("sample")
    with tarfile.open(SAMPLE) as archive:
        archive.extractall(root, filter="data")
    return next(p for p in root.rglob("*") if p.is_dir() and (p / "airplane").is_dir())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "base"
    cache = ["--cache-dir", str(run.parent / "cache")]
    assert main([*TRAIN, *TINY, *cache, "--data", str(SAMPLE), "--out", str(run), "--epochs", "1"]) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for file in run.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def test_resume_with_other_data_model_or_recipe_is_refused_and_changes_nothing(tmp_path, finished_run, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("cat", "dog"):
        (other / name).mkdir()
        for i in range(20):
            Image.fromarray(np.full((32, 32, 3), i * 10, np.uint8)).save(other / name / f"{i}.png")
    resume = [*TRAIN, *TINY, "--out", str(run), "--epochs", "2", "--resume"]
    assert main([*resume[:-1], "--data", str(other), "--resume", "--val-fraction", "0.25"]) == 2
    one_line_error(capsys, "--resume", "was trained with other settings", "classes", "data")
    assert main([*resume, "--data", str(SAMPLE), "--batch-size", "30"]) == 2
    one_line_error(capsys, "--batch-size 60 -> 30")
    assert main([*resume, "--data", str(SAMPLE), "--val-fraction", "0.2"]) == 2
    one_line_error(capsys, "--val-fraction 0.1 -> 0.2")
    other_model = [a if a != "depth=8" else "depth=14" for a in resume]
    assert main([*other_model, "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, 'model settings (--set) {"depth": 8} -> {"depth": 14}')
    assert snapshot(run) == before
    # a longer run on the same data, even at another lr, is what --resume is for; the change is named
    assert main([*resume, "--data", str(SAMPLE), "--lr", "0.05"]) == 0
    assert "resuming with changed recipe values: --epochs 1.0 -> 2.0; --lr 0.1 -> 0.05" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_new_run_never_overwrites_a_run_or_the_users_files(tmp_path, finished_run, capsys):
    without_checkpoint = copy_run(finished_run, tmp_path / "finished")
    (without_checkpoint / "checkpoint.pt").unlink()
    users = tmp_path / "mine"
    users.mkdir()
    (users / "config.json").write_text('{"mine": true}')
    new_run = [*TRAIN, *TINY, "--data", str(SAMPLE), "--epochs", "1"]
    for folder in (without_checkpoint, users):
        before = snapshot(folder)
        assert main([*new_run, "--out", str(folder)]) == 2
        one_line_error(capsys, f"--out {folder} already holds", "--overwrite")
        assert snapshot(folder) == before
    (without_checkpoint / "notes.txt").write_text("keep me")
    assert main([*new_run, "--out", str(without_checkpoint), "--overwrite"]) == 0
    assert (without_checkpoint / "notes.txt").read_text() == "keep me"  # only the run's own files are replaced
    assert len((without_checkpoint / "metrics.jsonl").read_text().splitlines()) == 1
    assert main([*new_run, "--out", str(tmp_path / "r"), "--resume", "--overwrite"]) == 2
    one_line_error(capsys, "give one of them")
    assert main([*new_run, "--out", str(tmp_path / "nothing-here"), "--resume"]) == 2
    one_line_error(capsys, "holds no checkpoint.pt")
    (tmp_path / "a-file").write_text("x")
    assert main([*new_run, "--out", str(tmp_path / "a-file")]) == 2
    one_line_error(capsys, "is a file, not a folder")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--image-size", "-8"], "--image-size -8: must be 0 or >= 8"),
        # decoded 32px images are not resized: a size they did not train at would reach the weights' card
        (["--image-size", "64"], "--image-size 64: the data's 32px images are decoded into memory"),
        (["--cutout", "33"], "--cutout 33: larger than the 32px images it would hide"),
        (["--epochs", "0"], "--epochs 0.0: must be > 0"),
        (["--recipe", "fastest"], "invalid choice: 'fastest' (choose from 'cifar-paper', 'imagenet-paper'"),
        (["--schedule", "wavy"], "invalid choice: 'wavy'"),
        (["--augment", "weird"], "invalid choice: 'weird'"),
        (["--precision", "int8"], "invalid choice: 'int8'"),
        (["--val-fraction", "0.001"], "--val-fraction 0.001: holds out no image"),
        (["--val-fraction", "1.5"], "--val-fraction 1.5: must be in [0, 1)"),
        (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
        (["--label-smoothing", "2"], "--label-smoothing 2.0: must be in [0, 1)"),
        (["--lr", "nan"], "--lr nan: must be a finite number"),
        (["--momentum", "-1"], "--momentum -1.0: must be in [0, 1)"),
        (["--stop-after-steps", "0"], "0 is below 1"),
    ],
)
def test_bad_recipe_values_are_refused_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert run([*TRAIN, "--data", str(SAMPLE), "--out", str(out), *flags]) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_eval_matches_classes_by_name(sample_folder, tmp_path, capsys):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for folder in sample_folder.iterdir():
        (renamed / ("zz_airplane" if folder.name == "airplane" else folder.name)).symlink_to(folder)
    evaluate = ["eval", "--model", "resnet20", "--pretrained", "--json"]
    assert main([*evaluate, "--data", str(renamed)]) == 2
    one_line_error(capsys, "zz_airplane is not among the weights' classes")
    # two of the ten classes: by position they would be read as airplane and automobile, and score near zero
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("cat", "dog"):
        (subset / name).symlink_to(sample_folder / name)
    assert main([*evaluate, "--data", str(subset)]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] > 0.5


def test_eval_reads_folders_numbered_by_label_or_capitalized_as_the_weights_classes(sample_folder, tmp_path, capsys):
    classes = sorted(folder.name for folder in sample_folder.iterdir())
    numbered, beyond = tmp_path / "numbered", tmp_path / "beyond"
    for root in (numbered, beyond):
        root.mkdir()
    for label, name in enumerate(classes):  # CIFAR-10 saved as label numbers: 0 = airplane ... 9 = truck
        (numbered / str(label)).symlink_to(sample_folder / name)
        (beyond / str(label + 1)).symlink_to(sample_folder / name)
    capitalized = tmp_path / "capitalized"
    capitalized.mkdir()
    for name in classes:
        (capitalized / name.capitalize()).symlink_to(sample_folder / name)
    evaluate = ["eval", "--model", "resnet20", "--pretrained", "--json", "--split", "all"]
    assert main([*evaluate, "--data", str(sample_folder)]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main([*evaluate, "--data", str(capitalized)]) == 0  # "Cat" is the weights' cat
    assert json.loads(capsys.readouterr().out) == by_name
    with pytest.warns(UserWarning, match="class folders are numbered; read as the weights' classes by number"):
        assert main([*evaluate, "--data", str(numbered)]) == 0
    assert json.loads(capsys.readouterr().out) == by_name
    assert main([*evaluate, "--data", str(beyond)]) == 2  # 10 is no class of ten: not guessed
    one_line_error(capsys, "1, 10, 2 are not among the weights' classes")


def test_int8_with_empty_calibration_or_an_empty_timing_batch_is_refused():
    model = create_model("resnet20", depth=8).eval()
    with pytest.raises(ValueError, match="calibration must be a non-empty batch"):
        optimize_for_inference(model, "int8", calibration=torch.empty(0, 3, 32, 32))
    with pytest.raises(ValueError, match="batch_size 0: the runtimes are timed on batches of at least one image"):
        optimize_for_inference(model, "int8", calibration=torch.zeros(4, 3, 32, 32), batch_size=0)


def test_skip_bad_images_when_the_bad_file_sorts_first(tmp_path, capsys):
    root = tmp_path / "d"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    (root / "cat" / "0000-broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="0000-broken.png: unreadable image"):
        load_dataset(root)
    train, _ = load_dataset(root, skip_bad_images=True)
    assert (len(train), train.skipped) == (8, 1)
    out = tmp_path / "run"
    argv = [*TRAIN, *TINY, "--data", str(root), "--out", str(out), "--epochs", "1", "--val-fraction", "0.25"]
    assert main([*argv, "--skip-bad-images"]) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["skipped_images"] == 1
    # Evaluating the same data: the bad file is named, or left out and counted with the same flag.
    evaluate = ["eval", "--weights", str(out), "--data", str(root), "--split", "all", "--json"]
    assert main(evaluate) == 2
    one_line_error(capsys, "0000-broken.png: unreadable image", "(--skip-bad-images to go on without it)")
    with pytest.warns(UserWarning, match="left out 1 unreadable image"):
        assert main([*evaluate, "--skip-bad-images"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 8


def test_convert_refuses_a_destination_it_would_mislabel(tmp_path, capsys):
    source = tmp_path / "r20.pth"
    torch.save(create_model("resnet20").state_dict(), source)
    assert main(["convert", str(source), str(tmp_path / "out.pth"), "--model", "resnet20"]) == 2
    one_line_error(capsys, "convert writes .safetensors")
    assert not (tmp_path / "out.pth").exists()


def test_weights_with_non_finite_values_are_refused_and_the_model_kept(tmp_path, capsys):
    state = create_model("resnet20").state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="NaN or infinite values .first: layer2.0.conv1.weight"):
        load_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert main(["eval", "--model", "resnet20", "--weights", str(path), "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, "NaN or infinite")


CIFAR_META = {b"label_names": [f"c{i}".encode() for i in range(10)]}


@pytest.mark.parametrize(
    "labels, meta, message",
    [
        ([0, 1] * 9 + [10, 3], CIFAR_META, "labels outside 0..9"),
        ([0] * 19, CIFAR_META, "20 images but 19 labels"),
        ([0, 1] * 10, [f"c{i}" for i in range(10)], "batches.meta: not a CIFAR batch .a list"),
        ([0, 1] * 10, {b"names": []}, "its meta file names no classes"),
    ],
)
def test_cifar_pickles_with_bad_labels_or_meta(tmp_path, labels, meta, message):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((20, 3072), dtype=np.uint8), b"labels": labels}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps(meta))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path)


@pytest.mark.parametrize("kind", ["runs code", "html"])
def test_a_cifar_batch_that_is_no_batch_is_named_and_never_run(tmp_path, capsys, kind):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((20, 3072), dtype=np.uint8), b"labels": [0, 1] * 10}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps(CIFAR_META))
    # protocol 0 by hand: os.system("touch <marker>") when unpickled by a plain pickle.load
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode() if kind == "runs code" else b"<html>\n"
    (root / "data_batch_3").write_bytes(payload)
    message = (
        "refused: .*os.system.*; nothing in it was run"
        if kind == "runs code"
        else "unreadable CIFAR batch .invalid load key, '<'.$"
    )
    with pytest.raises(DataError, match=f"data_batch_3: {message}"):
        load_dataset(tmp_path)
    assert main(["eval", "--model", "resnet20", "--pretrained", "--data", str(tmp_path)]) == 2
    one_line_error(capsys, "data_batch_3")
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "resnet20", "--batch-size", "0"], "--batch-size: 0 is below 1"),
        (["bench", "resnet20", "--plot", "speed.txt"], "--plot speed.txt: .txt is not a figure format"),
        (["models", "ResNet50"], "unknown model 'ResNet50'; did you mean resnet50"),
        (["plot", "runs/r20", "--out", "curves.txt"], "--out curves.txt: .txt is not a figure format"),
        (["bench", "resnet20", "--iters", "0"], "--iters: 0 is below 1"),
        (["bench", "resnet20", "--warmup", "x"], "'x' is not an integer"),
        (["bench", "resnet20", "--engine", "tensorrt"], "invalid choice: 'tensorrt'"),
        (["predict", "--model", "resnet20", "--pretrained", "x.png", "--topk", "0"], "--topk: 0 is below 1"),
        (["summary", "resnet20", "--input-size", "3", "0", "32"], "0 is below 1"),
        (["export", "--model", "resnet20", "--pretrained", "--format", "openvino", "--out", "x.onnx"], ".xml file"),
        (
            ["export", "--model", "resnet20", "--pretrained", "--format", "torchscript", "--out", "x.onnx"],
            "name it x.pt",
        ),
        (["eval", "--model", "resnet20", "--pretrained", "--data", "missing/"], "no such file or folder"),
        (["eval", "--model", ",resnet20", "--pretrained", "--data", "x/"], "model=,resnet20: an empty name between"),
        (["predict", "--model", "resnet32,resnet32", "--pretrained", "x.png"], "names a net twice"),
    ],
)
def test_command_options_give_one_line(capsys, argv, message):
    assert run(argv) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"image_size": "-8"}, "metadata 'image_size' -8 is not a size in pixels"),
        ({"classes": '["cat", "dog"]'}, "metadata names 2 classes but the classifier has 10"),
        ({"classes": "cat,dog"}, "metadata 'classes' is not valid JSON"),
        ({"std": "[0.2, 0.2, 0]"}, "metadata 'std' [0.2, 0.2, 0] is not three finite per-channel values"),
        ({"model_overrides": '{"depth": 21}'}, "depth 21 is not 6n+2"),
    ],
)
def test_weights_with_bad_metadata_are_named(tmp_path, capsys, metadata, message):
    path = tmp_path / "w.safetensors"
    state = create_model("resnet20").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    assert main(["predict", "--model", "resnet20", "--weights", str(path), str(path)]) == 2
    one_line_error(capsys, message)


def test_a_damaged_archive_is_named_not_read_in_part(tmp_path):
    damaged = tmp_path / "damaged.tar.gz"
    data = SAMPLE.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # cut mid-stream: tarfile alone would stop quietly at the cut
    with pytest.raises(DataError, match="damaged.tar.gz: (unreadable|damaged) archive"):
        load_dataset(damaged)
    plain = tmp_path / "plain.tar"
    with tarfile.open(SAMPLE) as source, tarfile.open(plain, "w") as target:
        for member in list(source)[:40]:
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    raw = bytearray(plain.read_bytes())
    raw[512 * 30 : 512 * 31] = b"\x01" * 512  # one garbled header in the middle
    plain.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="plain.tar: (unreadable|damaged) archive"):
        load_dataset(plain)


def test_a_full_disk_while_converting_names_the_destination_and_keeps_it(tmp_path, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    source = tmp_path / "w.pth"
    torch.save(create_model("resnet20").state_dict(), source)
    destination = tmp_path / "w.safetensors"
    destination.write_bytes(b"the previous file")

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: IoError(File too large (os error 27))")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    assert main(["convert", str(source), str(destination), "--model", "resnet20"]) == 2
    one_line_error(capsys, f"{destination}: could not be written (", "File too large")
    assert destination.read_bytes() == b"the previous file" and not list(tmp_path.glob(".*.tmp"))


def test_a_file_written_over_keeps_its_mode_and_a_new_one_gets_the_umasks(tmp_path):
    from resnets.atomic import atomic_write

    existing = tmp_path / "shared.bin"
    existing.write_bytes(b"old")
    existing.chmod(0o640)
    atomic_write(existing, lambda temporary: Path(temporary).write_bytes(b"new"))
    assert existing.read_bytes() == b"new" and existing.stat().st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    try:
        fresh = atomic_write(tmp_path / "fresh.bin", lambda temporary: Path(temporary).write_bytes(b"x"))
    finally:
        os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o644 and not list(tmp_path.glob(".*.tmp"))


def test_a_fractional_depth_is_refused(capsys):
    assert run(["summary", "resnet20", "--set", "depth=20.5"]) == 2
    one_line_error(capsys, "depth 20.5 is not a whole number of layers")


def test_overwrite_with_a_bad_model_setting_keeps_the_old_run(tmp_path, finished_run, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run_dir)
    argv = [*TRAIN, *TINY, "--data", str(SAMPLE), "--out", str(run_dir), "--epochs", "1", "--overwrite"]
    assert main([a if a != "depth=8" else "depth=9" for a in argv]) == 2
    one_line_error(capsys, "depth 9 is not 6n+2")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "SAME", "SAME", "--model", "resnet20"], "is the source itself"),
        (["export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--out", "DIR"], "is a folder"),
        (["plot", "RUN", "--out", "DIR"], "is a folder"),
        (["bench", "resnet20", "--mode", "train", "--dtype", "int8"], "--dtype int8 runs inference only"),
        (["bench", "resnet20", "--mode", "infer", "--plot", "DIR", "--iters", "1"], "is a folder"),
        (["export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--out", "SAME/x.onnx"], "is a file"),
        (["convert", "SAME", "SAME/sub/w.safetensors", "--model", "resnet20"], "w.safetensors: cannot write there"),
        (["convert", "SAME", "READONLY", "--model", "resnet20"], "READONLY: is read-only; make it writable"),
        (["plot", "RUN", "--out", "READONLY_PNG"], "READONLY_PNG: is read-only"),
        ([*TRAIN, "--data", str(SAMPLE), "--out", "SAME/run"], "cannot be made: SAME is a file, not a folder"),
        (["plot", "RUN", "--out", "SAME/curves.png"], "curves.png: cannot write there: SAME is a file"),
        (  # refused before any training, not after it
            ["reproduce", "depth", "--data", str(SAMPLE), "--budget", "fast", "--out", "SAME", "--runs", "DIR"],
            "SAME/depth: cannot be made: SAME is a file, not a folder",
        ),
    ],
)
def test_outputs_that_would_clobber_or_say_nothing_are_refused(tmp_path, finished_run, capsys, argv, message):
    same = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("resnet20").state_dict().items()}, str(same))
    folder = tmp_path / "folder"
    folder.mkdir()
    read_only = tmp_path / "kept.safetensors"
    read_only.write_bytes(b"the user's file")
    read_only.chmod(0o444)  # a rename would replace it (even without root); a plain open() would not
    read_only_png = tmp_path / "kept.png"  # a figure's name: refused for being read-only, not for its format
    read_only_png.write_bytes(b"the user's figure")
    read_only_png.chmod(0o444)
    paths = {"SAME": str(same), "DIR": str(folder), "RUN": str(finished_run), "READONLY": str(read_only)}
    paths["READONLY_PNG"] = str(read_only_png)
    before = snapshot(tmp_path)
    assert run([paths.get(a, a.replace("SAME/", f"{same}/")) for a in argv]) == 2
    message = message.replace("READONLY_PNG", str(read_only_png)).replace("READONLY", str(read_only))
    one_line_error(capsys, message.replace("SAME", str(same)))
    assert snapshot(tmp_path) == before and not any(folder.iterdir())


def test_an_openvino_export_beside_a_read_only_weights_file_is_refused_before_any_work(tmp_path, capsys):
    xml, weights = tmp_path / "model.xml", tmp_path / "model.bin"
    xml.write_text("the user's IR")
    weights.write_bytes(b"the user's weights")
    weights.chmod(0o444)  # a rename would replace it, and the .xml beside it would describe other weights
    before = snapshot(tmp_path)
    argv = ["export", "--model", "resnet20", "--pretrained", "--format", "openvino", "--out", str(xml)]
    assert main(argv) == 2
    one_line_error(capsys, f"{weights}: is read-only; make it writable")
    assert snapshot(tmp_path) == before


def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_folder_as_it_was(tmp_path, finished_run, capsys):
    diverge = [*TRAIN, *TINY, "--data", str(SAMPLE), "--epochs", "1", "--lr", "1e30"]
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run_dir)
    assert main([*diverge, "--out", str(run_dir), "--overwrite"]) == 2  # the old run comes back
    one_line_error(capsys, "no checkpoint was written, and the folder is left as it was")
    assert snapshot(run_dir) == before
    assert main([*diverge[:-4], "--epochs", "2", "--lr", "1e30", "--out", str(run_dir), "--resume"]) == 2
    one_line_error(capsys, "the last good checkpoint is kept")
    assert snapshot(run_dir) == before  # config.json does not record a recipe that never trained
    fresh = tmp_path / "fresh"
    assert main([*diverge, "--out", str(fresh)]) == 2
    assert not fresh.exists()  # nothing left behind that would block the next try


def test_small_or_unreadable_data_is_named(tmp_path, sample_folder, capsys):
    tiny = tmp_path / "tiny"
    for name in ("cat", "dog"):
        (tiny / name).mkdir(parents=True)
        for file in sorted((sample_folder / name).iterdir())[:3]:
            (tiny / name / file.name).symlink_to(file)
    argv = ["export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--dtype", "int8"]
    assert main([*argv, "--out", str(tmp_path / "q.onnx"), "--data", str(tiny)]) == 2
    one_line_error(capsys, "int8 needs at least 96 images")
    assert not (tmp_path / "q.onnx").exists()
    (tiny / "empty").mkdir()
    assert main(["eval", "--model", "resnet20", "--pretrained", "--data", str(tiny)]) == 2
    one_line_error(capsys, "empty: class folder holds no images")


def test_a_float_image_is_scaled_not_read_as_black(tmp_path):
    from resnets.data import decode_image

    gray = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(gray, mode="F").save(tmp_path / "float.tif")
    image = np.asarray(decode_image(tmp_path / "float.tif", "float.tif"))
    assert image.max() >= 250 and image.min() == 0


def test_set_num_classes_for_training_is_refused(capsys):
    assert main([*TRAIN, "--data", str(SAMPLE), "--out", "unused", "--set", "num_classes=5"]) == 2
    one_line_error(capsys, "--set num_classes")


def test_an_archive_whose_val_split_has_an_unknown_class_is_named(tmp_path):
    archive = tmp_path / "split.tar"
    with tarfile.open(SAMPLE) as source, tarfile.open(archive, "w") as target:
        images = [m for m in source if m.isfile()][::50]  # 20 images over every class
        for member in images:
            target.addfile(member, source.extractfile(member))
        stray = tarfile.TarInfo("val/ghost/0.png")
        stray.size = images[0].size
        target.addfile(stray, source.extractfile(images[0]))
    with pytest.raises(DataError, match="val/ holds classes that train/ does not: ghost"):
        load_dataset(archive)


def test_a_truncated_large_image_is_named_from_the_loader_workers(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(10):  # larger than CIFAR: decoded per batch by DataLoader workers
            Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(
                tmp_path / "data" / name / f"{i}.jpg"
            )
    bad = tmp_path / "data" / "a" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    argv = [*TRAIN, "--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.2"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, f"{bad}: unreadable image", "--skip-bad-images")
    assert not (tmp_path / "run").exists()  # the failed run left nothing behind
    with pytest.warns(UserWarning, match=f"skipped {bad}: unreadable image"):
        assert main([*argv, "--out", str(tmp_path / "skipping"), "--skip-bad-images"]) == 0
    assert (tmp_path / "skipping" / "model.safetensors").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5", ".pdparams"])
def test_an_empty_weights_file_is_named_and_the_model_kept(tmp_path, capsys, suffix):
    empty = tmp_path / f"w{suffix}"
    empty.touch()
    assert main(["eval", "--model", "resnet20", "--weights", str(empty), "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, f"{empty}: empty file (0 bytes)")
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="empty file"):
        load_weights(model, empty)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("g.pt", b"hello world\n", "unreadable or truncated PyTorch file (KeyError"),
        ("g.bin", b"hello world\n", "unreadable or truncated PyTorch file (KeyError"),
        ("g.h5", b"hello\n", "not an HDF5 file"),
        ("g.pdparams", b"<html>\n", "unreadable or truncated Paddle file (invalid load key, '<')"),
        ("w.npz", None, "a zip archive, but not a PyTorch (.pt) or Keras (.keras) weights file"),
    ],
)
def test_a_file_that_is_not_weights_is_named_and_the_model_kept(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is None:
        np.savez(path, a=np.zeros(3))
    else:
        path.write_bytes(content)
    assert main(["eval", "--model", "resnet20", "--weights", str(path), "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, f"{path}: {message}")
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=re.escape(message)):
        load_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_damaged_image_cache_is_rebuilt_not_fatal(tmp_path):
    first, _ = load_dataset(SAMPLE, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:5000])  # cut short, as by a full disk or a killed process
    with pytest.warns(UserWarning, match="damaged decoded-image cache"):
        again, _ = load_dataset(SAMPLE, cache_dir=tmp_path)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert load_dataset(SAMPLE, cache_dir=tmp_path)[0].images.shape == first.images.shape  # rewritten whole


def test_an_image_cache_that_cannot_be_written_costs_a_warning_not_the_data(tmp_path, monkeypatch):
    from resnets.data import sources

    def disk_full(payload, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 94592 vs 94488")

    monkeypatch.setattr(sources.torch, "save", disk_full)
    with pytest.warns(UserWarning, match=r"decoded images not cached \(.*cifar10-sample.*could not be written"):
        train, _ = load_dataset(SAMPLE, cache_dir=tmp_path)
    assert train.images is not None and len(train.labels) == len(train.images)
    assert not list(tmp_path.iterdir())  # no half-written entry for the next run to stumble on


def test_a_failed_write_names_the_file_keeps_the_old_one_and_chains_the_cause(tmp_path):
    from resnets.atomic import atomic_write
    from resnets.errors import WriteError

    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"the previous export")

    def failing_exporter(temporary):
        Path(temporary).write_bytes(b"half")
        raise KeyError()  # a message-less error: the line falls back to its type name

    def disk_full(temporary):
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError) as error:
        atomic_write(existing, failing_exporter, kept="the previous export")
    assert str(error.value) == f"{existing}: could not be written (KeyError); the previous export is kept"
    assert isinstance(error.value.__cause__, KeyError) and isinstance(error.value, OSError)
    full = r"\(\[Errno 28\] No space left on device; is the disk full\?\); no file was there before, and none is left"
    with pytest.raises(WriteError, match=full):
        atomic_write(tmp_path / "new.bin", disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert existing.read_bytes() == b"the previous export"


def test_an_error_without_a_message_still_gets_one_line(tmp_path, monkeypatch):
    from resnets.errors import first_line
    from resnets.train import checkpoint

    assert first_line(ValueError("\n  \nsecond line\nthird")) == "second line"
    assert first_line(EOFError()) == "EOFError" and first_line(RuntimeError("x" * 500), limit=10) == "x" * 10
    saved = tmp_path / "checkpoint.pt"
    saved.write_bytes(b"anything")

    def empty_message(*args, **kwargs):
        raise EOFError()  # "".splitlines()[0] used to turn this into an IndexError

    monkeypatch.setattr(checkpoint.torch, "load", empty_message)
    model = create_model("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(WeightsError, match=r"checkpoint.pt: unreadable or truncated PyTorch file \(EOFError\)"):
        checkpoint.load_checkpoint(saved, model, optimizer, torch.amp.GradScaler("cpu", enabled=False))


def test_plot_names_a_metrics_record_it_cannot_draw(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 10, "lr": 0.1, "val_top1": 0.5}) + "\n")
    assert main(["plot", str(tmp_path)]) == 2
    one_line_error(capsys, "metrics.jsonl: record 1 lacks train_loss, train_top1, val_loss")
    assert not (tmp_path / "curves.png").exists()


def test_plot_names_the_metrics_line_it_cannot_parse(tmp_path, capsys):
    good = json.dumps({"epoch": 1, "step": 10, "lr": 0.1, "val_top1": 0.5})
    (tmp_path / "metrics.jsonl").write_text(f"{good}\n\n{good}\n{good[:20]}\n")  # cut short by a kill mid-write
    assert main(["plot", str(tmp_path)]) == 2
    one_line_error(capsys, "metrics.jsonl, line 4: not a JSON record")
    (tmp_path / "metrics.jsonl").write_text(f"{good}\n[1, 2]\n")
    assert main(["plot", str(tmp_path)]) == 2
    one_line_error(capsys, "metrics.jsonl, line 2: not a JSON record")


def test_status_names_a_config_that_is_not_a_run_record(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["status", str(tmp_path)]) == 2
    one_line_error(capsys, "config.json: not a JSON object")


def test_status_of_a_folder_that_is_no_run_says_so_and_a_planned_one_is_not_started(tmp_path, capsys):
    images = tmp_path / "images"
    for name in ("cat", "dog"):
        (images / name).mkdir(parents=True)
    assert main(["status", str(images)]) == 2
    one_line_error(capsys, f"{images}: not a run folder (no config.json; it holds cat, dog)")
    planned = tmp_path / "planned"
    planned.mkdir()
    assert main(["status", str(planned)]) == 0
    assert capsys.readouterr().out == f"{planned}: not started\n"
    # `status runs/*`: a folder that is no run is named, and the folders after it are still reported
    assert main(["status", str(images), str(planned)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"{planned}: not started\n" and "not a run folder" in captured.err


def test_the_command_line_hints_at_flags_where_the_library_names_arguments(capsys):
    with pytest.raises(WeightsError, match="pass weights=PATH instead"):
        __import__("resnets").create_model("resnet50", pretrained=True)
    assert main(["eval", "--model", "resnet50", "--pretrained", "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, "no pretrained weights ship for 'resnet50'", "pass --weights PATH instead")


def test_a_finished_run_that_goes_on_no_longer_stands_for_its_old_weights(tmp_path, finished_run, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    steps = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    resume = [*TRAIN, *TINY, "--data", str(SAMPLE), "--out", str(run), "--epochs", "2", "--resume"]
    assert main([*resume, "--stop-after-steps", str(steps + 1)]) == 0
    capsys.readouterr()
    # stopped mid-extension: the 1-epoch weights are gone, so nothing reads them as the run's
    assert not (run / "model.safetensors").exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert main(["status", str(run)]) == 0
    status = capsys.readouterr().out  # where --resume goes on: one step into the second epoch
    assert f"stopped at step {steps + 1:,} of {2 * steps:,} (1 of 2 epochs and 1 step): " in status
    assert status.rstrip().endswith("at least 1 min of training left (at its fastest recent pace)")
    assert main(resume) == 0
    metadata = load_weights(create_model("resnet20", depth=8, num_classes=10), run / "model.safetensors")
    assert metadata["steps"] == str(2 * steps)
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    assert f"finished at step {2 * steps:,}" in capsys.readouterr().out


def test_a_bad_image_is_named_without_a_flag_the_command_lacks_and_leaves_no_empty_folders(tmp_path, capsys):
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((32, 32, 3), i * 10, np.uint8)).save(data / name / f"{i}.png")
    (data / "cat" / "0.png").write_bytes(b"not an image")
    export = ["export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--out", str(tmp_path / "r.onnx")]
    assert run([*export, "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cat/0.png: unreadable image" in err and "--skip-bad-images" not in err, err
    assert not (tmp_path / "r.onnx").exists()
    out = tmp_path / "results" / "new"
    assert run(["reproduce", "depth", "--data", str(data), "--out", str(out), "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cat/0.png: unreadable image" in err and "--skip-bad-images" not in err, err
    assert sorted(tmp_path.iterdir()) == [data]  # results/new/depth and results/new/runs/... made, then taken away
    assert run(["eval", "--model", "resnet20", "--pretrained", "--data", str(data)]) == 2
    one_line_error(capsys, "cat/0.png: unreadable image", "(--skip-bad-images to go on without it)")


def test_weights_of_another_net_are_not_evaluated_under_the_name_asked_for(finished_run, capsys):
    evaluate = ["eval", "--weights", str(finished_run), "--data", str(SAMPLE), "--json"]
    assert run([*evaluate, "--model", "resnet56"]) == 2
    one_line_error(capsys, "holds resnet20 (depth=8), not resnet56; name resnet20 or leave --model NAME out")
    assert run([*evaluate, "--model", "resnet20"]) == 0  # the name it was trained under, with its recorded settings
    named = json.loads(capsys.readouterr().out)
    assert run(evaluate) == 0
    assert json.loads(capsys.readouterr().out) == named


def _with_damaged_pickle(data: bytes) -> bytes:
    """A torch file whose pickle (not its tensors) has 100 bytes overwritten, 200 bytes into the pickle."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))
    header = member.header_offset  # a 30-byte local header, then the member's name and extra field, then its data
    name_length, extra_length = (int.from_bytes(data[header + at : header + at + 2], "little") for at in (26, 28))
    start = header + 30 + name_length + extra_length + 200
    return data[:start] + b"x" * 100 + data[start + 100 :]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "its zip archive is incomplete or damaged"),
        (lambda data: _with_damaged_pickle(data), "damaged pickle data"),
    ],
)
def test_a_damaged_checkpoint_is_named_in_one_short_line_and_the_run_kept(
    tmp_path, finished_run, capsys, damage, message
):
    run_dir = copy_run(finished_run, tmp_path / "run")
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = snapshot(run_dir)
    assert main([*TRAIN, *TINY, "--data", str(SAMPLE), "--out", str(run_dir), "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and len(err[0]) < 200, err
    assert "weights_only" not in err[0] and "miniz" not in err[0]
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "resnet20", "--data", "d", "--out", "o", "--schedule", "wavy"], "invalid choice: 'wavy'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--model", "resnet20"], "the following arguments are required: --data, --out"),
    ],
)
def test_a_mistyped_command_line_is_one_line_not_the_usage_block(capsys, argv, message):
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].endswith("--help)"), err


def test_a_link_to_a_missing_image_is_named_not_dropped_unsaid(tmp_path):
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), i * 10, np.uint8)).save(data / name / f"{i}.png")
    (data / "cat" / "moved.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"cat/moved.png: unreadable image"):
        load_dataset(data)
    kept, _ = load_dataset(data, skip_bad_images=True)
    assert len(kept) == 6


def test_a_checkpoint_without_its_config_is_named_for_what_is_missing(tmp_path, finished_run, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / "model.safetensors").unlink()
    (run_dir / "config.json").unlink()
    assert run(["eval", "--weights", str(run_dir), "--data", str(SAMPLE)]) == 2
    one_line_error(capsys, "holds checkpoint.pt but not the config.json that says how to read it")


def test_convert_records_the_settings_it_built_the_net_with(tmp_path, capsys):
    from resnets.weights.pretrained import load_trained

    source = tmp_path / "r20.pth"
    torch.save(create_model("resnet20").state_dict(), source)
    pooled, deeper = tmp_path / "max.safetensors", tmp_path / "d20.safetensors"
    assert run(["convert", str(source), str(pooled), "--model", "resnet20", "--set", "global_pool=max"]) == 0
    assert load_trained(pooled)[0].config.global_pool.value == "max"  # not read back as the average-pooled net
    assert run(["convert", str(source), str(deeper), "--model", "resnet56", "--set", "depth=20"]) == 0
    model, _ = load_trained(deeper)  # named resnet56, built 20 layers deep: readable again
    assert model.config.layers == (3, 3, 3)


def test_predict_reads_every_image_a_folder_holds_and_names_what_it_leaves_out(tmp_path, capsys):
    from resnets.deploy import Predictor

    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    elsewhere, photos = tmp_path / "elsewhere", tmp_path / "photos"
    elsewhere.mkdir(), photos.mkdir()
    Image.fromarray(pixels).save(elsewhere / "linked.png")
    Image.fromarray(pixels).save(photos / "a.png")
    Image.fromarray(pixels).save(photos / "b.jfif", format="JPEG")  # a JPEG by another name
    (photos / "notes.heic").write_bytes(b"no decoder for this")
    (photos / "shelf").symlink_to(elsewhere)  # a linked folder is walked as any other
    predictor = Predictor.load("resnet20", pretrained=True)
    with pytest.warns(UserWarning, match=r"photos: left out 1 file that is not an image by its suffix \(.heic\)"):
        results = predictor.predict_files([str(photos)])
    assert [Path(r["file"]).name for r in results] == ["a.png", "b.jfif", "linked.png"]
    single = predictor.predict_files(str(photos / "a.png"))  # one path, not the characters of its name
    assert len(single) == 1 and [t["class"] for t in single[0]["top"]] == [t["class"] for t in results[0]["top"]]
    # Alone or in a batch of three, the kernels may round differently in the last digit.
    assert [t["probability"] for t in single[0]["top"]] == pytest.approx(
        [t["probability"] for t in results[0]["top"]], abs=1e-5
    )


def test_an_image_is_read_as_it_is_shown_at_any_bit_depth(tmp_path):
    from resnets.data import decode_image

    gray = np.random.default_rng(0).integers(0, 64, (32, 32)).astype(np.uint16)  # a dark image
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "8bit.png")
    Image.fromarray(gray * 257).save(tmp_path / "16bit.png")  # the same values at 16 bits
    eight, sixteen = (np.asarray(decode_image(tmp_path / f"{n}.png", n)) for n in ("8bit", "16bit"))
    assert np.abs(eight.astype(int) - sixteen).max() <= 1 and sixteen.max() < 64  # not brightened to white
    upright = np.zeros((40, 20, 3), np.uint8)
    upright[:10] = 255  # white at the top of a tall image
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # stored on its side, EXIF says turn it back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = np.asarray(decode_image(tmp_path / "phone.jpg", "phone.jpg"))
    assert shown.shape == (40, 20, 3) and shown[:10].mean() > 200 and shown[20:].mean() < 50


def test_an_openvino_export_never_replaces_a_bin_file_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "model.bin"
    mine.write_bytes(b"the user's own file")
    export = ["export", "--model", "resnet20", "--pretrained", "--format", "openvino"]
    assert run([*export, "--out", str(tmp_path / "model.xml")]) == 2
    one_line_error(capsys, "model.bin: exists without model.xml")
    assert mine.read_bytes() == b"the user's own file" and not (tmp_path / "model.xml").exists()
    assert run([*export, "--out", str(tmp_path / "ir.xml")]) == 0
    assert f"and {tmp_path / 'ir.bin'}" in capsys.readouterr().out  # the pair it wrote, both named
    assert run([*export, "--out", str(tmp_path / "ir.xml")]) == 0  # an export of its own is replaced as a pair


def test_a_run_with_a_weight_average_is_usable_before_it_ends(tmp_path, capsys):
    run_dir = tmp_path / "ema"
    argv = [*TRAIN, *TINY, "--data", str(SAMPLE), "--out", str(run_dir), "--epochs", "2", "--ema-decay", "0.9"]
    assert main([*argv, "--stop-after-steps", "3"]) == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="read its averaged weights 'ema', not 'model'"):
        assert run(["eval", "--weights", str(run_dir), "--data", str(SAMPLE), "--json"]) == 0  # n_averaged: no weight
    assert json.loads(capsys.readouterr().out)["n"] == 1000
    assert not (run_dir / "metrics.jsonl").exists()  # stopped inside its first epoch: nothing to plot yet
    assert run(["plot", str(run_dir)]) == 2
    one_line_error(capsys, f"{run_dir}: no epoch has finished yet (no metrics.jsonl)")


def test_status_names_a_record_it_cannot_read_and_goes_on(tmp_path, finished_run, capsys):
    odd = copy_run(finished_run, tmp_path / "odd")
    rows = (odd / "metrics.jsonl").read_text().splitlines()
    (odd / "metrics.jsonl").write_text("\n".join([*rows[:-1], json.dumps({"epoch": 1})]) + "\n")
    assert run(["status", str(odd), str(finished_run)]) == 2
    captured = capsys.readouterr()
    assert f"{odd}: its config.json or metrics.jsonl does not read as a run's (no 'step')" in captured.err
    assert f"{finished_run}: finished" in captured.out  # the folder after it is still reported


def test_without_the_optional_runtimes_torch_serves_and_int8_names_what_to_install(monkeypatch, capsys):
    import importlib.util

    from resnets.inference import optimize

    found = importlib.util.find_spec
    missing = {"onnxruntime", "onnx", "openvino"}
    monkeypatch.setattr(optimize.importlib.util, "find_spec", lambda name: None if name in missing else found(name))
    fast = optimize_for_inference(create_model("resnet20").eval(), "fp32", compile=False)
    assert set(fast.choices) == {"fp32 torch eager"}
    assert run(["predict", "--model", "resnet20", "--pretrained", "--fast", "int8", str(ROOT / "README.md")]) == 2
    one_line_error(capsys, "no installed runtime serves int8 here", "(pip install 'resnets[deploy]')")


@pytest.mark.parametrize(
    "setting, message",
    [
        ("num_classes=ten", "num_classes='ten' must be a whole number from 1"),
        ("num_classes=2.5", "num_classes=2.5 must be a whole number from 1"),
        ("stem_width=0", "stem_width=0 must be a whole number from 1"),
        ("layers=[1.5,1,1]", "layers=(1.5, 1, 1) must be one or more positive block counts"),
        ("widths=[16,0,64]", "widths=(16, 0, 64) must be whole numbers of channels from 1"),
    ],
)
def test_a_model_setting_of_the_wrong_kind_is_named(capsys, setting, message):
    assert run(["summary", "resnet20", "--set", setting]) == 2
    one_line_error(capsys, message)


def test_summary_feeds_the_net_the_channels_it_takes(capsys):
    assert run(["summary", "resnet20", "--set", "in_chans=1"]) == 0
    assert "input: 1x32x32" in capsys.readouterr().out
    assert run(["summary", "resnet20", "--input-size", "1", "32", "32"]) == 2
    one_line_error(capsys, "--input-size 1 32 32: the net takes 3 channels (in_chans)")


def test_a_keras_layer_without_its_bias_is_named_with_its_file(tmp_path):
    import h5py

    weights = tmp_path / "nobias.h5"
    with h5py.File(weights, "w") as file:
        group = file.create_group("model_weights")
        group.attrs["layer_names"] = [b"predictions"]
        layer = group.create_group("predictions")
        layer.create_dataset("kernel", data=np.zeros((2048, 1000), np.float32))
        layer.attrs["weight_names"] = [b"kernel"]
    with pytest.raises(WeightsError, match=r"nobias.h5: Keras layer 'predictions': 1 weight arrays \(\(2048, 1000\)\)"):
        load_weights(create_model("resnet50_keras"), weights)


def test_a_paddle_optimizer_file_beside_the_weights_adds_no_weights(tmp_path):
    state = {k: v.numpy() for k, v in create_model("resnet20").state_dict().items() if "num_batches" not in k}
    weights = {  # paddle's names and layout: BN statistics as _mean/_variance, Linear weights (in, out)
        k.replace(".running_mean", "._mean").replace(".running_var", "._variance"): v.T.copy()
        if k == "fc.weight"
        else v
        for k, v in state.items()
    }
    (tmp_path / "model.pdparams").write_bytes(pickle.dumps(weights))
    stale = {"conv1.weight": np.ones_like(weights["conv1.weight"]), "conv1.weight_velocity_0": weights["conv1.weight"]}
    (tmp_path / "model.pdopt").write_bytes(pickle.dumps(stale))  # paddle.save's optimizer state, beside the weights
    model = create_model("resnet20")
    load_weights(model, tmp_path / "model.pdparams")
    assert np.array_equal(model.state_dict()["conv1.weight"].numpy(), weights["conv1.weight"])


def test_weights_without_their_normalization_say_which_one_they_are_read_with(tmp_path):
    from resnets.weights.pretrained import load_trained

    bare = tmp_path / "bare.safetensors"
    save_file(create_model("resnet20").state_dict(), str(bare), metadata={"model": "resnet20"})
    with pytest.warns(UserWarning, match="bare.safetensors: records no normalization; read with ImageNet's"):
        _, card = load_trained(bare)
    assert card.mean == (0.485, 0.456, 0.406)


def test_an_int8_export_is_checked_on_images_it_was_not_calibrated_on(tmp_path, monkeypatch):
    from resnets.deploy import Predictor, export

    drawn, calibrated = [], []
    sample, write_onnx = export.sample_images, export.write_onnx
    monkeypatch.setattr(export, "sample_images", lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1])
    monkeypatch.setattr(export, "write_onnx", lambda m, o, c=None: calibrated.append(c) or write_onnx(m, o, c))
    report = export.export_model(Predictor.load("resnet20", pretrained=True), "onnx", tmp_path / "q.onnx", dtype="int8")
    (pool,), (calibration,) = drawn, calibrated
    checked = pool[::5]
    assert report["images"] == len(checked) == 64 and len(calibration) == 256
    assert not any(torch.equal(image, seen) for image in checked for seen in calibration)


def test_the_predictor_refuses_settings_that_would_answer_something_else(capsys):
    from resnets.deploy import Predictor

    predictor = Predictor.load("resnet20", pretrained=True)
    with pytest.raises(ValueError, match="val_fraction=2.0 must lie between 0 and 1"):
        predictor.evaluate_data(SAMPLE, split="val", val_fraction=2.0)  # would score every image as "held out"
    with pytest.raises(ValueError, match="topk=-1 must be a whole number from 1"):
        predictor.predict_files([str(SAMPLE)], topk=-1)


def test_bench_names_a_peer_it_gives_no_row_for():
    from resnets.bench.timing import Mode, build_steps

    with pytest.warns(UserWarning, match="peer openvino: an inference runtime on the CPU; no row for training"):
        steps = build_steps(
            "resnet20",
            2,
            Mode.TRAIN,
            dtypes=["fp32"],
            channels_last=False,
            compile_model=False,
            device=torch.device("cpu"),
            peers=["openvino"],
        )
    assert len(steps) == 1  # ours alone

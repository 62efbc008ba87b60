"""Knowledge distillation (--teacher) and training on every image (--val-fraction 0), on the embedded sample."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.loaders import normalize
from resnets.models import create_model
from resnets.train import get_recipe, train
from resnets.train.distill import DistillationLoss, int8_teacher_pays, load_teacher, served_teacher
from resnets.train.plots import plot_run, read_metrics
from resnets.train.run_folder import RunFolderError
from resnets.weights import read_state_dict
from resnets.weights.pretrained import load_trained, pretrained_for, sha256_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"
TINY = dict(batch_size=60, epochs=1, warmup_iterations=5, log_every=0)
DEPTH8 = {"depth": 8}


def tiny_recipe(**fields):
    return get_recipe("cifar-fast", **{**TINY, **fields})


def run(tmp_path: Path, name: str, **fields) -> Path:
    out = tmp_path / name
    train("resnet20", SAMPLE, out, tiny_recipe(**fields), model_overrides=DEPTH8, cache_dir=tmp_path, progress=False)
    return out


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("teacher"), "teacher", epochs=2) / "model.safetensors"


def test_the_loss_is_hintons_objective():
    torch.manual_seed(0)
    logits = torch.randn(8, 10, requires_grad=True)
    teacher_logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    hard = F.cross_entropy(logits, labels)
    assert torch.equal(DistillationLoss(weight=0.0, temperature=4.0)(logits, labels, teacher_logits), hard)
    # A student that already says what the teacher says owes it nothing.
    assert DistillationLoss(weight=1.0, temperature=4.0)(logits, labels, logits.detach()).item() == pytest.approx(0)
    # The soft term's gradient is (softmax(z/T) - softmax(t/T)) * T / batch: T² keeps it on the hard term's scale.
    temperature = 4.0
    DistillationLoss(weight=1.0, temperature=temperature)(logits, labels, teacher_logits).backward()
    expected = (F.softmax(logits / temperature, 1) - F.softmax(teacher_logits / temperature, 1)) * temperature / 8
    torch.testing.assert_close(logits.grad, expected.detach())


def test_the_teacher_is_frozen_and_reads_the_students_normalization(teacher_file):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    same = load_teacher(str(teacher_file), classes=classes, mean=(0.5,) * 3, std=(0.25,) * 3, image_size=32)
    assert not same.training and not any(p.requires_grad for p in same.parameters())
    same.train()  # the loop's train() reaches it: the teacher stays as it was trained
    assert not same.net.training
    # Its batch norms are folded into its convolutions: the same outputs as the net evaluated as saved.
    tensors, meta = read_state_dict(teacher_file)
    saved = create_model("resnet20", depth=8).eval()
    saved.load_state_dict(tensors)
    teacher_mean = torch.tensor(json.loads(meta["mean"])).view(1, 3, 1, 1)
    teacher_std = torch.tensor(json.loads(meta["std"])).view(1, 3, 1, 1)
    raw = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = saved((raw - teacher_mean) / teacher_std)
    torch.testing.assert_close(same((raw - 0.5) / 0.25), expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in same.modules())
    assert torch.equal(same.net.fc.weight, tensors["fc.weight"])
    # The same raw images normalized two ways give the teacher the same input, so the same outputs.
    other = load_teacher(str(teacher_file), classes=classes, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.2), image_size=32)
    as_same = (raw - 0.5) / 0.25
    as_other = (raw - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.3, 0.2]).view(1, 3, 1, 1)
    torch.testing.assert_close(same(as_same), other(as_other), rtol=1e-4, atol=1e-4)


def test_a_student_learns_from_the_teacher_and_records_it(tmp_path, teacher_file):
    plain = run(tmp_path, "plain")
    taught = run(tmp_path, "taught", teacher=str(teacher_file.parent))  # its run folder names the file
    unweighted = run(tmp_path, "unweighted", teacher=str(teacher_file), distill_weight=0.0)
    config = json.loads((taught / "config.json").read_text())
    assert config["teacher"] == f"resnet20 from {teacher_file}"
    assert config["recipe"]["teacher"] == str(teacher_file.parent)
    weights = {name: load_file(str(folder / "model.safetensors")) for name, folder in
               (("plain", plain), ("taught", taught), ("unweighted", unweighted))}  # fmt: skip
    # With no weight on the teacher the run is the plain one, bit for bit: the same batches, draws and steps ...
    assert all(torch.equal(weights["plain"][key], weights["unweighted"][key]) for key in weights["plain"])
    # ... and with weight, the teacher changes what the student learns.
    assert not torch.equal(weights["plain"]["fc.weight"], weights["taught"]["fc.weight"])
    assert read_metrics(taught)[-1]["val_top1"] > 0
    # A distilled run also logs its cross-entropy with the labels: with no weight on the teacher, that is its loss.
    last = read_metrics(unweighted)[-1]
    assert last["train_cross_entropy"] == pytest.approx(last["train_loss"], rel=1e-6)
    taught_last = read_metrics(taught)[-1]
    assert taught_last["train_cross_entropy"] != pytest.approx(taught_last["train_loss"], rel=1e-3)
    assert "train_cross_entropy" not in read_metrics(plain)[-1]
    assert plot_run(taught).stat().st_size > 10_000  # drawn with its cross-entropy beside the objective


def test_several_teachers_teach_as_the_mean_of_their_logits(tmp_path, teacher_file):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    kw = dict(classes=classes, mean=(0.5,) * 3, std=(0.25,) * 3, image_size=32)
    trained, shipped = load_teacher(str(teacher_file), **kw), load_teacher("resnet20", **kw)
    ensemble = load_teacher(f"{teacher_file}, resnet20", **kw)
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ensemble(images), (trained(images) + shipped(images)) / 2)
    assert ensemble.description == f"the mean of resnet20 from {teacher_file}, resnet20 (shipped weights)"
    # Its fingerprint covers every member: a resumed run notices any one of them changed.
    assert ensemble.sha256 not in (trained.sha256, shipped.sha256)
    assert load_teacher(f"resnet20,{teacher_file}", **kw).sha256 != ensemble.sha256
    for spec, message in (("resnet20,,resnet56", "an empty name between commas"), ("resnet20,resnet20", "twice")):
        with pytest.raises(ValueError, match=message):
            load_teacher(spec, **kw)
    # A run taught by the ensemble records it, and learns otherwise than from either member alone.
    taught = run(tmp_path, "ensemble", teacher=f"{teacher_file},resnet20")
    alone = run(tmp_path, "alone", teacher=str(teacher_file))
    config = json.loads((taught / "config.json").read_text())
    assert config["teacher"].startswith("the mean of resnet20 from")
    assert config["teacher_sha256"] == load_teacher(f"{teacher_file},resnet20", **kw).sha256
    assert read_metrics(taught)[-1]["train_loss"] != pytest.approx(read_metrics(alone)[-1]["train_loss"], rel=1e-4)


def test_a_teacher_that_does_not_fit_is_refused_in_one_line(tmp_path, teacher_file, capsys):
    train_cli = ["train", "--model", "resnet20", "--set", "depth=8", "--data", str(SAMPLE), "--epochs", "1"]
    for teacher, message in (
        ("resnet1202", "neither a weights file nor a net with shipped weights (resnet20"),
        (str(tmp_path / "missing.safetensors"), "neither a weights file nor a net with shipped weights"),
        (str(tmp_path), "the folder holds no model.safetensors (has that run finished?)"),
    ):
        assert main([*train_cli, "--out", str(tmp_path / "run"), "--teacher", teacher]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1
        assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with pytest.raises(ValueError, match="takes 32px images, the student 40px"):
        load_teacher(str(teacher_file), classes=classes, mean=(0.5,) * 3, std=(0.25,) * 3, image_size=40)


def test_val_fraction_zero_trains_on_every_image(tmp_path):
    folder = run(tmp_path, "all", val_fraction=0.0, epochs=2)
    config = json.loads((folder / "config.json").read_text())
    assert (config["train_images"], config["val_images"]) == (1000, 0)
    rows = read_metrics(folder)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all("val_top1" not in row and 0 <= row["train_top1"] <= 1 for row in rows)
    assert (folder / "model.safetensors").is_file()
    metadata = read_state_dict(folder / "model.safetensors")[1]
    assert "val_top1" not in metadata and metadata["steps"] == str(rows[-1]["step"])  # no empty validation figure
    assert plot_run(folder).stat().st_size > 10_000
    # Its weights know they saw every image: evaluating them on the usual hold-out says so.
    weights = str(folder / "model.safetensors")
    with pytest.warns(UserWarning, match=r"trained on every image \(--val-fraction 0\)"):
        assert main(["eval", "--model", "resnet20", "--weights", weights, "--data", str(SAMPLE), "--split", "val"]) == 0


def test_an_ensemble_with_a_member_trained_on_every_image_says_its_val_figure_is_a_training_figure(tmp_path):
    # The shipped resnet20 trained on all 50,000 images (--val-fraction 0); resnet32 and resnet44 held 5,000 out.
    assert pretrained_for("resnet20").path.is_file()
    assert load_trained(pretrained_for("resnet20").path)[1].extra["recipe_fields"].count('"val_fraction": 0.0') == 1
    argv = ["eval", "--pretrained", "--data", str(SAMPLE), "--split", "val", "--cache-dir", str(tmp_path)]
    for members in ("resnet32,resnet20", "resnet20,resnet32"):
        with pytest.warns(UserWarning, match=r"trained on every image \(--val-fraction 0\)"):
            assert main([*argv, "--model", members]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main([*argv, "--model", "resnet32,resnet44"]) == 0


def test_a_distilled_run_resumes_exactly(tmp_path, teacher_file):
    recipe = tiny_recipe(epochs=2, teacher=str(teacher_file))
    kwargs = dict(model_overrides=DEPTH8, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, tmp_path / "straight", recipe, **kwargs)
    assert train("resnet20", SAMPLE, tmp_path / "resumed", recipe, stop_after_steps=7, **kwargs).stopped
    train("resnet20", SAMPLE, tmp_path / "resumed", recipe, resume=True, **kwargs)
    straight, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("straight", "resumed"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


def test_a_distilled_run_refuses_to_resume_with_a_changed_teacher(tmp_path, teacher_file):
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(teacher_file, teacher)
    recipe = tiny_recipe(epochs=2, teacher=str(teacher))
    kwargs = dict(model_overrides=DEPTH8, cache_dir=tmp_path, progress=False)
    assert train("resnet20", SAMPLE, tmp_path / "run", recipe, stop_after_steps=7, **kwargs).stopped
    assert json.loads((tmp_path / "run" / "config.json").read_text())["teacher_sha256"] == sha256_of(teacher)
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}

    tensors, meta = read_state_dict(teacher)  # the same net, retrained: other weights at the same path
    save_file(
        {name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in tensors.items()},
        str(teacher),
        metadata=meta,
    )
    with pytest.raises(RunFolderError, match="distilled from a teacher whose weights have changed since"):
        train("resnet20", SAMPLE, tmp_path / "run", recipe, resume=True, **kwargs)
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == before


def test_an_int8_teacher_softens_as_its_fp32_self(cpu_at_hand):
    # The int8 range is chosen for the kernels that really run: simulated VNNI on a CPU without it saturates.
    _, card = load_trained(pretrained_for("resnet56").path, "resnet56")
    images = normalize(load_dataset(SAMPLE)[0].images[:512], card.mean, card.std).float()
    kw = dict(classes=card.classes, mean=card.mean, std=card.std, image_size=32)
    teacher, ensemble = load_teacher("resnet56", **kw), load_teacher("resnet56,resnet32", **kw)
    teach, served_by = served_teacher(teacher, images[:256])
    assert served_by in ("int8 (onnxruntime)", "int8 (openvino)")
    # On images it was not calibrated on, its softened outputs (T = 4, as trained) are the fp32 teacher's to within
    # a few thousandths of the distillation term, which is near 2 in training; its answers agree.
    held_out = images[256:]
    exact, quantized = teacher(held_out), teach(held_out)
    soft_gap = 16 * F.kl_div(F.log_softmax(quantized / 4, 1), F.log_softmax(exact / 4, 1), reduction="batchmean",
                             log_target=True)  # fmt: skip
    assert soft_gap.item() < 0.05
    assert (quantized.argmax(1) == exact.argmax(1)).float().mean() >= 0.97
    # An ensemble is quantized member by member, each reading the batch through its own normalization.
    teach_both, _ = served_teacher(ensemble, images[:256])
    assert (teach_both(held_out).argmax(1) == ensemble(held_out).argmax(1)).float().mean() >= 0.97


def test_a_long_fp32_cpu_run_serves_its_teacher_through_the_fastest_fp32_runtime(tmp_path, teacher_file, monkeypatch):
    monkeypatch.setattr("resnets.train.distill.cpu_has_vnni", lambda: False)  # AVX2 only: int8 does not pay
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)  # a long run's choice, not its cost
    recipe = tiny_recipe(epochs=1, teacher=str(teacher_file), compile=True, precision="fp32")
    out = tmp_path / "run"
    train("resnet20", SAMPLE, out, recipe, model_overrides=DEPTH8, cache_dir=tmp_path, progress=False)
    config = json.loads((out / "config.json").read_text())
    runtimes = ("torch eager", "torch compiled", "onnxruntime", "openvino")
    assert config["teacher_served_by"] in [f"fp32 ({runtime})" for runtime in runtimes]
    assert config["trained_on"][0]["teacher_served_by"] == config["teacher_served_by"]
    # Whichever runtime serves it, the teacher answers as the module itself does.
    card_kw = dict(classes=config["classes"], mean=config["mean"], std=config["std"], image_size=32)
    teacher = load_teacher(str(teacher_file), **card_kw)
    images = normalize(load_dataset(SAMPLE)[0].images[:64], config["mean"], config["std"]).float()
    teach, served_by = served_teacher(teacher, images, dtype="fp32")
    assert served_by.startswith("fp32 (")
    torch.testing.assert_close(teach(images), teacher(images), rtol=0, atol=1e-4)


def test_int8_teaching_is_chosen_for_long_cpu_runs_and_recorded_in_each_stretch(tmp_path, teacher_file, monkeypatch):
    monkeypatch.setattr("resnets.train.distill.cpu_has_vnni", lambda: True)
    assert int8_teacher_pays(None, torch.device("cpu"), compiled=True)
    assert not int8_teacher_pays(None, torch.device("cpu"), compiled=False)  # a short run: quantizing would not pay
    assert not int8_teacher_pays(None, torch.device("cuda"), compiled=True)
    monkeypatch.setattr("resnets.train.distill.cpu_has_vnni", lambda: False)  # AVX2: int8 sums through 16 bits
    assert not int8_teacher_pays(None, torch.device("cpu"), compiled=True)
    assert int8_teacher_pays(True, torch.device("cpu"), compiled=False)
    with pytest.raises(ValueError, match="serves the teacher on the CPU"):
        int8_teacher_pays(True, torch.device("cuda"), compiled=True)
    # A run that goes on with an int8 teacher records the change as a new stretch, from the step it resumed at.
    kwargs = dict(model_overrides=DEPTH8, cache_dir=tmp_path, progress=False)
    out = tmp_path / "run"
    first = tiny_recipe(epochs=2, teacher=str(teacher_file), teacher_int8=False)
    assert train("resnet20", SAMPLE, out, first, stop_after_steps=7, **kwargs).stopped
    train("resnet20", SAMPLE, out, dataclasses.replace(first, teacher_int8=True), resume=True, **kwargs)
    config = json.loads((out / "config.json").read_text())
    stretches = [(s["from_step"], s["teacher_served_by"]) for s in config["trained_on"]]
    assert stretches[0] == (0, f"{config['trained_on'][0]['precision']} (torch)")
    assert stretches[1][0] == 7 and stretches[1][1].startswith("int8 (")
    assert config["teacher_served_by"] == stretches[1][1]
    assert read_metrics(out)[-1]["val_top1"] > 0

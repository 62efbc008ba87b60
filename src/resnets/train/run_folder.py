"""The run folder: the files a training run writes, in one place, and the rules that keep them whole.

A run folder holds `config.json` (model, data, recipe, hardware stretches), `metrics.jsonl` (one record per
evaluation), `checkpoint.pt` (everything needed to continue exactly) and, once the run ends, `model.safetensors`
(the weights with their classes and preprocessing). A new run never writes into a folder that holds anything but
hidden files, unless asked to overwrite a run there; `--resume` continues only the run the folder recorded.

Example:
    >>> folder = RunFolder("runs/r20")
    >>> folder.config()["model"]
    'resnet20'
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resnets.atomic import atomic_write, file_in_the_way, make_folder, missing_folders, remove_if_empty
from resnets.errors import ResnetsError
from resnets.weights.metadata import WeightsMetadata
from resnets.weights.readers import WeightsError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
# What a run writes, and so what --overwrite may remove; a user's own files are never removed.
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, MODEL, "curves.png", "timing.json", "tensorboard")
PREVIOUS = ".previous-run"  # where --overwrite sets the old run aside until the new one has a checkpoint
LOCK = ".lock"  # the pid of the process training the run now
# A finished run that goes on (--resume with more epochs) is finished no longer: its old weights are set aside here,
# so that eval, predict, export and status do not take them for the run's while it trains or after it stops.
FINISHED_BEFORE = ".model-before-resume.safetensors"
# Recipe values a resumed run must keep: the split (val_fraction, seed) decides which images were held out, and the
# batch size where in an epoch the checkpoint stopped. Any other value may change on purpose (a lower lr to go on
# with, a longer run: the schedule is recomputed for the new length, another precision on other hardware) and is
# named when the run resumes.
FIXED_ON_RESUME = ("batch_size", "val_fraction", "seed", "image_size")


def hardware_history(config: dict) -> list[dict]:
    """The stretches of device and precision a run trained with, read from its config.json; a config written before
    `trained_on` existed counts as one stretch from step 0.

    Example:
        >>> hardware_history(RunFolder("runs/r20").config())[0]["device"]
    """
    return config.get("trained_on") or [{"device": config["device"], "precision": config["precision"], "from_step": 0}]


class RunFolderError(ResnetsError, ValueError):
    """A run folder that cannot be used as asked: one line says what it holds and what to pass."""


class RunLock:
    """One process trains a run at a time: the lock file holds its pid, so a lock left by a dead process is taken,
    and a process that holds it already (`resnets reproduce` around `train`) takes it again without waiting.

    Example:
        >>> RunLock(Path("runs/r20")).holder()  # None, or the pid of the process training it
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._taken = False  # this object made the lock file (a lock taken again leaves it to its first taker)
        self._made: list[Path] = []  # the folders made for the lock, gone again if nothing else was written there

    def holder(self) -> int | None:
        """The live process that holds the lock, if any."""
        try:
            pid = int(self.path.read_text() or "0")
        except (ValueError, FileNotFoundError):
            return None
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError, OverflowError):
            return None
        except PermissionError:
            return pid  # alive, another user's
        return pid if pid > 0 else None

    def free(self) -> bool:
        return self.holder() is None

    def acquire(self, block: bool) -> bool:
        """Take the lock; False when another live process holds it and `block` is not asked."""
        made = missing_folders(self.path.parent)
        make_folder(self.path.parent)  # one line naming what stands in the way where it cannot be made
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.holder()
                if holder == os.getpid():
                    return True
                if holder is None:
                    self.path.unlink(missing_ok=True)
                    continue
                if not block:
                    return False
                time.sleep(10)
                continue
            os.write(descriptor, str(os.getpid()).encode())
            os.close(descriptor)
            self._taken, self._made = True, made
            return True

    def release(self) -> None:
        if self._taken:
            self.path.unlink(missing_ok=True)
            remove_if_empty(self._made)
            self._taken, self._made = False, []


class RunFolder:
    """The files of one run under `path`; reading and checking them, never half-writing them."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config_path = self.path / CONFIG
        self.metrics_path = self.path / METRICS
        self.checkpoint_path = self.path / CHECKPOINT
        self.model_path = self.path / MODEL
        self._resumed, self._config_before, self._checkpoint_before = False, None, None

    def contents(self) -> list[str]:
        """The names in the folder that are not hidden (atomic writes' temporaries and locks are)."""
        if not self.path.exists():
            blocking = file_in_the_way(self.path)
            if blocking is not None:
                raise RunFolderError(f"--out {self.path}: cannot be made: {blocking} is a file, not a folder")
            return []
        if not self.path.is_dir():
            raise RunFolderError(f"--out {self.path}: is a file, not a folder")
        return sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))

    def prepare_new(self, overwrite: bool = False) -> None:
        """Make way for a new run: refuse a folder holding anything, unless `overwrite`, which removes a run's own
        files (RUN_FILES) and leaves everything else as it was."""
        held = self.contents()
        if not held:
            return
        if not overwrite:
            kind = "a run" if set(held) & set(RUN_FILES) else "files"
            listed = ", ".join(held[:4]) + (", …" if len(held) > 4 else "")
            raise RunFolderError(
                f"--out {self.path} already holds {kind} ({listed}); pass --resume to continue a run, "
                "--overwrite to replace it, or choose another --out"
            )
        # The old run is set aside, not deleted, until the new one has a checkpoint of its own (see `settle`).
        previous = self.path / PREVIOUS
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        for name in set(held) & set(RUN_FILES):
            os.replace(self.path / name, previous / name)

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Hold the run for this process while it trains: a second process training the same folder (a forgotten
        background run, a second --resume) would interleave checkpoints and metrics, so it is refused in one line.
        A folder made for the lock alone is gone again afterwards."""
        lock = RunLock(self.path)
        if not lock.acquire(block=False):
            holder = lock.holder()  # read once: the message names one process
            raise RunFolderError(
                f"--out {self.path}: process {holder} is training this run now; stop it (kill -TERM "
                f"{holder}: it checkpoints) before resuming or overwriting it, or choose another --out"
            )
        try:
            yield
        finally:
            lock.release()

    def begin(self, resume: bool) -> None:
        """Remember what the folder held before this run writes to it, so that a run that fails before its first
        checkpoint leaves it as it was (`settle(failed=True)`)."""
        self._resumed = resume
        self._config_before = self.config_path.read_text() if resume and self.config_path.is_file() else None
        set_aside = self.path / FINISHED_BEFORE
        set_aside.unlink(missing_ok=True)  # left by a run killed outright: its checkpoint may have moved on since
        if resume and self.model_path.is_file():
            self._checkpoint_before = _file_stamp(self.checkpoint_path)
            os.replace(self.model_path, set_aside)

    def settle(self, failed: bool) -> None:
        """After the run: on success, or once the run has a checkpoint, drop the run --overwrite set aside; on a
        failure before any checkpoint, put the folder back as it was (a resumed run's config.json included)."""
        previous = self.path / PREVIOUS
        if self._resumed:
            if failed and self._config_before is not None:
                text = self._config_before
                atomic_write(self.config_path, lambda temporary: Path(temporary).write_text(text))
            set_aside = self.path / FINISHED_BEFORE
            if set_aside.is_file():
                # the old weights still stand for the run only if it never got past them
                if failed and _file_stamp(self.checkpoint_path) == self._checkpoint_before:
                    os.replace(set_aside, self.model_path)
                else:
                    set_aside.unlink()
            return
        if failed and not self.checkpoint_path.is_file():
            for name in RUN_FILES:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            if previous.is_dir():
                for item in previous.iterdir():
                    os.replace(item, self.path / item.name)
                previous.rmdir()
            if self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()
            return
        if previous.is_dir():
            shutil.rmtree(previous)

    def config(self) -> dict[str, Any]:
        """The run's recorded config.json."""
        try:
            config = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise RunFolderError(f"{self.config_path}: no such file (is {self.path} a `resnets train` run?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{self.config_path}: unreadable ({error})") from None
        if not isinstance(config, dict):
            raise RunFolderError(f"{self.config_path}: not a JSON object (is {self.path} a `resnets train` run?)")
        return config

    def status(self) -> str:
        """Where the run stands, in one line: not started, stopped at some epoch, or finished, with its last
        validation figure and the hardware of its last stretch.

        Example:
            >>> RunFolder("training/reproduce/zoo/resnet56").status()
            'stopped after epoch 73 of 180 (step 25,696 of 63,360): validation top-1 86.04% (flip-averaged); ...'
        """
        try:
            return self._status()
        except RunFolderError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError) as error:
            # a record edited by hand or written by another tool: named, and `status A B` still reports B
            what = f"no {error}" if isinstance(error, KeyError) else str(error)
            raise RunFolderError(f"{self.path}: its {CONFIG} or {METRICS} does not read as a run's ({what})") from None

    def _status(self) -> str:
        holder = RunLock(self.path).holder()
        training = f" (process {holder} is training it now)" if holder is not None else ""
        if not self.config_path.is_file():
            held = self.contents() if self.path.is_dir() else []
            foreign = [name for name in held if name not in RUN_FILES]
            # an image folder or a project passed by mistake, not a planned run nor one that --overwrite is replacing
            if foreign and holder is None and not (self.path / PREVIOUS).exists():
                listed = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
                raise RunFolderError(f"{self.path}: not a run folder (no {CONFIG}; it holds {listed})")
            return f"not started{training}"
        config = self.config()
        rows = self.metrics() if self.metrics_path.is_file() else []
        if not rows:
            return f"begun, no epoch recorded yet{training}"
        last, recipe = rows[-1], config.get("recipe", {})
        steps_per_epoch = last["step"] / last["epoch"] if last["epoch"] else 0
        total = recipe.get("iterations") or round(recipe.get("epochs", 0) * steps_per_epoch)
        epochs = total / steps_per_epoch if steps_per_epoch else 0
        if "val_top1" in last:
            view = "flip-averaged" if recipe.get("eval_flip") else "one view"
            figure = f"validation top-1 {100 * last['val_top1']:.2f}% ({view})"
            if "val_top1_one_view" in last:
                figure += f", {100 * last['val_top1_one_view']:.2f}% on one view"
        else:
            figure = f"training top-1 {100 * last['train_top1']:.2f}% (no hold-out)"
        latest = hardware_history(config)[-1]
        hardware = f"{latest['device']}, {latest['precision']}"
        if self.model_path.is_file():
            return f"finished at step {last['step']:,}: {figure}; {hardware}"
        where = f"epoch {round(last['epoch'], 1):g} of {round(epochs, 1):g} (step {last['step']:,} of {total:,})"
        state = f"training now (process {holder}), last checkpoint after" if holder is not None else "stopped after"
        step = self._checkpoint_step()
        if step is not None and step > last["step"] and steps_per_epoch:  # stopped mid-epoch, past its last record
            done, position = divmod(step, round(steps_per_epoch))
            steps = f"{position:,} step" + ("s" if position != 1 else "")
            where = f"step {step:,} of {total:,} ({done} of {round(epochs, 1):g} epochs and {steps})"
            state = state.replace(" after", " at")
            figure += f" after epoch {round(last['epoch'], 1):g}"
        else:
            step = last["step"]
        return f"{state} {where}: {figure}; {hardware}{_time_left(rows, total, step, latest.get('from_step', 0))}"

    def _checkpoint_step(self) -> int | None:
        """The step `--resume` goes on from, read from the checkpoint without its tensors (None without a readable
        one): a run stopped mid-epoch is past its last metrics record."""
        if not self.checkpoint_path.is_file():
            return None
        import torch  # status reads only JSON otherwise

        try:
            payload = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
            return int(payload["state"]["step"])
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
            return None

    def weights_card(self) -> WeightsMetadata:
        """What the run's weights file will say of itself (net, settings, classes, input size, normalization), read
        from config.json: for reading its checkpoint before the run ends.

        Example:
            >>> RunFolder("runs/r20").weights_card().classes[:2]
            ['airplane', 'automobile']
        """
        config = self.config()
        try:
            return WeightsMetadata(
                model=config["model"],
                model_overrides=config.get("model_overrides", {}),
                classes=config["classes"],
                image_size=config["image_size"],
                mean=tuple(config["mean"]),
                std=tuple(config["std"]),
            )
        except (KeyError, TypeError) as error:
            raise RunFolderError(f"{self.config_path}: records no usable {error} for its weights") from None

    def require_checkpoint(self) -> None:
        """--resume needs a checkpoint: checked before any data is read."""
        if not self.checkpoint_path.is_file():
            raise RunFolderError(f"--resume: {self.path} holds no {CHECKPOINT} to continue from")

    def check_resume(self, run_info: dict[str, Any]) -> list[str]:
        """Refuse to continue a run with another model, other classes, other data, another split or batch size
        than it recorded: one line names what differs. Returns the recipe values that changed on purpose, each as
        "--flag old -> new", for the run to print.
        """
        self.require_checkpoint()
        recorded = self.config()
        refused = []
        for key, label in (("model", "model"), ("model_overrides", "model settings (--set)"), ("classes", "classes")):
            if recorded.get(key) != run_info[key]:
                refused.append(f"{label} {_short(recorded.get(key))} -> {_short(run_info[key])}")
        data_keys = ("train_images", "val_images", "mean", "std")
        if any(_rounded(recorded.get(key)) != _rounded(run_info[key]) for key in data_keys):
            before = f"{recorded.get('data')} ({recorded.get('train_images')} training images)"
            refused.append(f"data {before} -> {run_info['data']} ({run_info['train_images']} training images)")
        old_recipe, new_recipe = recorded.get("recipe", {}), run_info["recipe"]
        changed = [
            f"--{key.replace('_', '-')} {_short(old_recipe[key])} -> {_short(value)}"
            for key, value in new_recipe.items()
            if key != "name" and key in old_recipe and _rounded(old_recipe[key]) != _rounded(value)
        ]
        refused += [change for change in changed if change.split()[0][2:].replace("-", "_") in FIXED_ON_RESUME]
        if refused:
            raise RunFolderError(
                f"--resume: {self.path} was trained with other settings: {'; '.join(refused)} "
                "(model, data, split and batch size must stay; lr, length, precision and the like may change)"
            )
        return changed

    def check_teacher(self, sha256: str) -> None:
        """Refuse to go on distilling from a teacher whose weights differ from those the run began with (the same
        path, another file: a retrained or replaced net would change what the rest of the run learns)."""
        recorded = self.config().get("teacher_sha256")
        if recorded and recorded != sha256:
            raise RunFolderError(
                f"--resume: {self.path} was distilled from a teacher whose weights have changed since (sha256 "
                f"{recorded[:12]}... now {sha256[:12]}...): restore that file, or start a new run"
            )

    def write_config(self, run_info: dict[str, Any]) -> None:
        make_folder(self.path)
        text = json.dumps(run_info, indent=2, default=str)
        atomic_write(self.config_path, lambda temporary: Path(temporary).write_text(text))

    def metrics(self) -> list[dict[str, Any]]:
        """The metrics records, oldest first."""
        if not self.metrics_path.is_file():
            if self.config_path.is_file():  # a run that has begun: it writes its first record after its first epoch
                raise RunFolderError(f"{self.path}: no epoch has finished yet (no {METRICS})")
            raise RunFolderError(f"{self.metrics_path}: no metrics (is {self.path} a run folder of `resnets train`?)")
        try:
            lines = self.metrics_path.read_text().splitlines()
        except UnicodeDecodeError as error:
            raise RunFolderError(f"{self.metrics_path}: unreadable ({error})") from None
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RunFolderError(f"{self.metrics_path}, line {number}: not a JSON record ({error.msg})") from None
            if not isinstance(rows[-1], dict):
                raise RunFolderError(f"{self.metrics_path}, line {number}: not a JSON record (a JSON object)")
        if not rows:
            raise RunFolderError(f"{self.metrics_path}: no epoch finished yet")
        return rows

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(record) + "\n" for record in records)
        atomic_write(self.metrics_path, lambda temporary: Path(temporary).write_text(text))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as file:
            file.write(json.dumps(record) + "\n")


def weights_source(path: Path) -> tuple[Path, WeightsMetadata | None]:
    """The weights file that `path` stands for, and what its run folder records of it, where it has a run folder.

    Example:
        >>> weights_source(Path("runs/r20/checkpoint.pt"))[1].classes[:2]
        ['airplane', 'automobile']

    A finished run folder stands for its model.safetensors, which carries its own metadata. An unfinished one stands
    for its checkpoint, and so does a checkpoint.pt given by name, read with the classes and normalization of the
    run's config.json: checkpoints written before they carried their own card would otherwise be read with
    ImageNet's."""
    given_folder = path.is_dir()
    folder = RunFolder(path if given_folder else path.parent)
    if given_folder:
        if folder.model_path.is_file():
            return folder.model_path, None
        if not folder.checkpoint_path.is_file():
            raise WeightsError(f"{path}: a folder without {folder.model_path.name} or a run's checkpoint to read")
        if not folder.config_path.is_file():  # its classes and normalization are recorded there, not guessed
            raise WeightsError(f"{path}: holds {CHECKPOINT} but not the {CONFIG} that says how to read it")
        path = folder.checkpoint_path
        warnings.warn(f"{path.parent}: the run has not finished; its latest checkpoint is used", stacklevel=3)
    if path == folder.checkpoint_path and folder.config_path.is_file():
        try:
            return path, folder.weights_card()
        except RunFolderError:  # a config.json of some other tool beside a checkpoint.pt: not a run of ours
            if given_folder:
                raise
    return path, None


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """Which version of a file is there: an atomic write replaces the file, so its inode changes with it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _time_left(rows: list[dict[str, Any]], total: int, step: int, since_step: int) -> str:
    """The steps left after `step` at the fastest pace of the last five records on the latest hardware (from
    `since_step`; training time, evaluation aside): a record that spans a pause (SIGSTOP, a shared core) only runs
    slower. A record's seconds cover its `timed_steps` (a resumed epoch's steps after the resume; older runs lack the
    field)."""
    paces, previous_step = [], 0
    for row in rows:
        steps, previous_step = row.get("timed_steps", row["step"] - previous_step), row["step"]
        if steps > 0 and row["step"] > since_step and row.get("epoch_seconds", 0.0) > 0:
            paces.append(row["epoch_seconds"] / steps)
    paces = paces[-5:]
    if not paces or total <= step:
        return ""
    seconds = (total - step) * min(paces)
    left = f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{max(1, round(seconds / 60))} min"  # not "0.0 h"
    return f"; at least {left} of training left (at its fastest recent pace)"


def _rounded(value: Any) -> Any:
    """Floats compared to 6 places (JSON round trips), lists element-wise."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."

"""The user's data and model inside a compare run: load, fingerprint, check, refuse a changed resume.

``spocu compare`` calls, in order, before anything is written:

1. :func:`load_data` -- a built-in dataset (:func:`~spocu.experiments.data.datasets.load_dataset`) or
   the user's file or folder (:func:`~spocu.experiments.data.user_data.load_user_dataset`);
2. :func:`finalize` -- the data's content hash and the model factory's source hash into the
   protocol (so the runs' protocol hash covers them), and one model built and run on a zero
   batch (:func:`check_model`), so a factory that cannot work fails now, naming itself;
3. :func:`check_resume` -- if ``--out`` already holds an experiment on other content of the same
   data file, or made with other code of the same model file, a :class:`ResumeRefused` that
   names the file (rather than a list of differing protocol keys).

Example:
    >>> from spocu.experiments.config import resolve_config
    >>> config = resolve_config({"dataset": "wdbc"})
    >>> dataset = load_data(config)
    >>> finalize(config, dataset) == config  # a built-in dataset and model: nothing to add
    True
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from spocu.experiments.config import ExperimentConfig, with_model_source
from spocu.experiments.data.datasets import Dataset
from spocu.experiments.seeding import merges_last_batch

__all__ = ["ResumeRefused", "check_model", "check_resume", "finalize", "load_data"]


class ResumeRefused(ValueError):
    """``--out`` holds runs made on other data or with other model code; the message names the file."""


def load_data(
    config: ExperimentConfig,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    allow_leak: bool = False,
) -> Dataset:
    """The experiment's dataset, split and preprocessed (raises DatasetError or ValueError naming the problem).

    ``data_dir``: where the built-in mnist and cifar10 files lie, as checked against the dataset where the
    spec was built (:func:`~spocu.experiments.config.check_data_dir`).
    """
    if config.user_data:
        from spocu.experiments.data.user_data import load_user_dataset

        dataset = load_user_dataset(
            config.dataset,
            target=config.target,
            image_size=config.image_size,
            split_seed=config.split_seed,
            val_size=config.val_size,
            test_size=config.test_size,
            allow_leak=allow_leak,
            split=config.split,
        )
    else:
        from spocu.experiments.data.datasets import load_dataset

        dataset = load_dataset(
            config.dataset,
            data_dir=data_dir,
            download=download,
            progress=progress,
            split_seed=config.split_seed,
            val_size=config.val_size,
            test_size=config.test_size,
            split=config.split,
        )
    if dataset.resplit is not None and dataset.info.get("one_hot"):
        _check_seeds_share_features(config, dataset)
    return dataset


def _check_seeds_share_features(config: ExperimentConfig, dataset: Dataset) -> None:
    """One-hot columns take their categories from each seed's training split: every seed must end with the same features."""
    from spocu.experiments.data.download import DatasetError

    for seed in config.seeds:
        mine = dataset.for_seed(seed)
        if mine.input_shape != dataset.input_shape or mine.info.get("one_hot") != dataset.info.get("one_hot"):
            differ = sorted(
                c for c in dataset.info["one_hot"] if mine.info["one_hot"].get(c) != dataset.info["one_hot"][c]
            )
            raise DatasetError(
                f"{config.dataset}: with --split per-seed, seed {seed}'s training split lacks categories of the text column(s) "
                f"{', '.join(differ)} that other seeds' splits have, so the seeds' networks would get different inputs; "
                "use --split fixed (one split for every seed), or merge the rare categories"
            )


def check_model(config: ExperimentConfig, dataset: Dataset) -> dict | None:
    """Build the model once (first activation, first seed) in the engine's framework and run a zero batch.

    Returns what ``--swap`` replaced (``{"summary": ..., "left": n}``, measured by the probe forward), or None.

    Raises:
        ValueError: the model cannot take this data, or (UserModelError) a factory fails; the message names it.
    """
    spec = config.activations[0]
    seed = config.seeds[0]
    # a factory is called twice (the last activation the second time): one that hands out a cached
    # instance, or ignores its activation, is caught now rather than after a silently wrong comparison
    builds = [spec, config.activations[-1]] if config.model.is_factory else [spec]
    if config.framework == "keras":
        from spocu.experiments.models import keras_models as models_keras

        models = [
            models_keras.build_model(config.model, dataset.input_shape, dataset.num_classes, s, seed) for s in builds
        ]
        return getattr(models[0], "spocu_swap", None)
    from spocu.experiments.models import torch_models as models_torch

    models = [models_torch.build_model(config.model, dataset.input_shape, dataset.num_classes, s, seed) for s in builds]
    model = models[0]
    if not config.model.is_factory:  # a factory's output was checked as it was built
        import torch

        models_torch.probe_forward(model, torch.zeros((2, *dataset.input_shape)))
    _check_training_batch(config, dataset, model, models_torch)
    return getattr(model, "spocu_swap", None)


def _check_training_batch(config: ExperimentConfig, dataset: Dataset, model, models_torch) -> None:
    """One training-mode forward on the smallest batch training will take (3 at most), state restored.

    Catches, before anything is written, a model that trains on no batch but the check's
    (a reshape to 2 rows) and a batch norm given ``--batch-size 1``.
    """
    import torch

    from spocu.experiments.models.factories import UserModelError

    size = min(config.batch_size, len(dataset.y_train), 3)
    name = config.model.name
    try:
        output = models_torch.probe_forward(model, torch.zeros((size, *dataset.input_shape)), training=True)
    except Exception as error:  # the user's model: anything it raises is a one-line refusal
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise UserModelError(
            f"--model {name}: a training batch of {size} does not go through the model ({detail})"
            + ("; use a --batch-size of 2 or more" if size == 1 else "")
        ) from None
    shape = tuple(output.shape)
    if shape != (size, dataset.num_classes):
        raise UserModelError(
            f"--model {name}: the model's output has shape {shape} for a training batch of {size}; "
            f"expected ({size}, {dataset.num_classes}): one logit per class and sample"
        )


def _wrong_framework(config: ExperimentConfig, error: Exception) -> Exception:
    text = str(error)
    if config.framework == "keras" and "not a keras.Model" in text:
        return type(error)(
            f"{text}: it builds a PyTorch model; run it with the PyTorch engine (--framework torch, the default)"
        )
    if config.framework == "torch" and "not a torch.nn.Module" in text:
        return type(error)(f"{text}: if it builds a Keras model, run it with --framework keras")
    return error


def finalize(config: ExperimentConfig, dataset: Dataset) -> ExperimentConfig:
    """``config`` with the data's content hash and the factory's source hash; the model checked on ``dataset``."""
    if config.split == "per-seed" and dataset.resplit is None:  # the user's data has its own test part: it keeps it
        config = dataclasses.replace(config, split="fixed")
    if config.user_data:
        config = dataclasses.replace(config, data_sha256=dataset.info["content_sha256"])
        if config.target is not None and dataset.info.get("target_is_default"):
            # --target naming the last column is the default: the same experiment as no --target
            config = dataclasses.replace(config, target=None)
    # a last training batch of one sample is merged into the one before (batch_bounds): recorded in the protocol
    config = dataclasses.replace(
        config, last_batch="merged" if merges_last_batch(len(dataset.y_train), config.batch_size) else None
    )
    config, _ = with_model_source(config)
    try:
        swapped = check_model(config, dataset)
    except ValueError as error:
        raise _wrong_framework(config, error) from None
    if swapped is not None:  # recorded in the protocol and the report: what the swap replaced, and what it left
        model = dataclasses.replace(config.model, swap_report=swapped["summary"], swap_left=swapped["left"])
        config = dataclasses.replace(config, model=model)
    return config


def check_resume(config: ExperimentConfig, out: str | Path) -> None:
    """Refuse, naming the file, to resume ``out`` if its runs were made on other data or other model code.

    Only the content hashes are compared here; every other protocol difference is the output
    directory's own check, made as it is claimed.
    """
    path = Path(out) / "config.json"
    try:
        stored = json.loads(path.read_text())["protocol"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no experiment there yet (or not ours): the output directory's own checks speak
    if not isinstance(stored, dict):
        return
    protocol = config.protocol()
    if stored.get("split", "fixed") != protocol.get("split", "fixed"):
        before = stored.get("split", "fixed")
        raise ResumeRefused(
            f"the runs in {out} were made with --split {before}"
            + (
                " (one split for every seed: spocu 0.1's protocol)"
                if before == "fixed"
                else " (each seed its own split)"
            )
            + f", this command asks for --split {protocol.get('split', 'fixed')}: add --split {before} to resume them, or use another --out"
        )
    same_data = stored.get("dataset") == protocol.get("dataset")
    if config.user_data and same_data and stored.get("data_sha256") != protocol.get("data_sha256"):
        raise ResumeRefused(
            f"{config.dataset} changed since the runs in {out} were made (content sha256 {stored.get('data_sha256')} there, "
            f"{protocol.get('data_sha256')} now): results on the two versions cannot be pooled; use another --out, or restore the file"
        )
    if protocol.get("last_batch") != stored.get("last_batch") and {**stored, "last_batch": None} == {
        **protocol,
        "last_batch": None,
    }:
        raise ResumeRefused(
            f"the runs in {out} were trained with a last batch of one sample; spocu now trains it with the batch before "
            f"(last_batch: merged, as a batch norm cannot train on one sample): results on the two plans cannot be pooled; "
            "use another --out, or another --batch-size"
        )
    model, before = protocol["model"], stored.get("model") or {}
    if (
        config.model.is_factory
        and before.get("name") == model["name"]
        and before.get("source_sha256") != model["source_sha256"]
    ):
        from spocu.experiments.models.factories import load_factory

        source = load_factory(config.model.name, config.model.swap).source
        raise ResumeRefused(
            f"the model code {source} changed since the runs in {out} were made (source sha256 {before.get('source_sha256')} "
            f"there, {model['source_sha256']} now): use another --out, or restore the file"
        )

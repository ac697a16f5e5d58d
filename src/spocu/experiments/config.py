"""What an experiment is: the protocol every run shares, the grid of (activation, seed) runs, presets.

An :class:`ExperimentConfig` splits into

- the **protocol** (:meth:`ExperimentConfig.protocol`): dataset and split, model, optimizer,
  learning rate, epochs, batch size, init, framework (and Keras backend) -- everything that defines one run;
  an output directory holds runs of one protocol only (checked on resume);
- the **grid**: the activations (the first is the reference the others are tested against)
  and the seeds. A resumed experiment may extend the grid (more seeds, another activation).

Settings are resolved in this order: command-line option, preset, dataset default
(:data:`DATASET_DEFAULTS`), global default.

Example:
    >>> cfg = resolve_config({"dataset": "wdbc"})
    >>> [a.canonical for a in cfg.activations], cfg.seeds, cfg.model.label
    (['spocu', 'spocu(c=1)', 'relu', 'selu'], (0, 1, 2, 3, 4), 'mlp 64-64')
    >>> cfg.reference.init  # parsed once, here: every layer below takes these ActivationSpec objects
    'lecun-normal'
    >>> resolve_config({"preset": "seed-cifar10"}).protocol()["batch_size"]
    100
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from spocu.experiments.activations import (
    INIT_SCHEMES,
    OWN_INIT,
    ActivationSpec,
    parse_activation,
    split_activation_list,
)
from spocu.experiments.data.datasets import (
    DATASETS,
    DEFAULT_TEST_SIZE,
    DEFAULT_VAL_SIZE,
    EMBEDDED_DATASETS,
    SPLIT_MODES,
)
from spocu.experiments.data.user_data import is_user_dataset
from spocu.experiments.models.spec import MODELS, ModelSpec, is_model_factory, parse_swap

if TYPE_CHECKING:
    from spocu.experiments.models.factories import ModelFactory

__all__ = [
    "MODELS",
    "FRAMEWORKS",
    "OPTIMIZERS",
    "MOMENTUM_OPTIMIZERS",
    "MAX_SEEDS",
    "KERAS_BACKENDS",
    "check_split_size",
    "check_data_dir",
    "PRESETS",
    "PAPER_PROVENANCE",
    "SPOCU_CORRECTION",
    "DEFAULT_ACTIVATIONS",
    "TUNABLE",
    "TUNE_POINTS",
    "TUNE_SEEDS",
    "DATASET_DEFAULTS",
    "OPTIONS",
    "ModelSpec",
    "ExperimentConfig",
    "resolve_config",
    "with_model_source",
]

FRAMEWORKS = ("torch", "keras")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: the most seeds one experiment may have
MAX_SEEDS = 10_000
#: the optimizers that take --momentum
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
#: the Keras backends --keras-backend accepts
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def check_split_size(value: float, option: str = "split size") -> None:
    """Raise ValueError unless ``value`` is a fraction in (0, 1) or a whole count >= 1 (finite).

    Example:
        >>> check_split_size(0.2), check_split_size(5000)
        (None, None)
        >>> check_split_size(float("nan"), "--val-size")
        Traceback (most recent call last):
        ...
        ValueError: --val-size must be a fraction in (0, 1) or a whole number of samples >= 1, got nan
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
        or (value >= 1 and value != int(value))
    ):
        raise ValueError(f"{option} must be a fraction in (0, 1) or a whole number of samples >= 1, got {value}")


#: what ``--tune`` can tune
TUNABLE = ("lr",)
#: ``--tune lr``: this many log-spaced rates, from lr / 10**TUNE_DECADES to lr * 10**TUNE_DECADES
TUNE_POINTS = 5
TUNE_DECADES = 1.0
#: ``--tune lr`` trains each rate on this many seeds (the experiment's first ones)
TUNE_SEEDS = 2
#: how a rate is scored (higher wins; ties: lower validation loss, then the rate nearer the default)
TUNE_SCORE = "mean over the tuning seeds of the last epoch's validation accuracy; a rate at which a tuning seed diverged is not eligible"

#: Defaults per dataset, used where neither an option nor a preset sets a value.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "wdbc": {"model": "mlp", "hidden": (64, 64), "epochs": 40, "batch_size": 32, "lr": 1e-3},
    "digits": {"model": "mlp", "hidden": (128, 128), "epochs": 30, "batch_size": 64, "lr": 1e-3},
    "mnist": {"model": "mlp", "hidden": (256, 256), "epochs": 10, "batch_size": 128, "lr": 1e-3},
    "cifar10": {"model": "seed-cnn", "epochs": 20, "batch_size": 100, "lr": 1e-3},
}

#: SPOCU as the correction (doi 10.1007/s00521-020-05412-6) specifies it: "similarly as in 5.1 of [1]
#: fix c = γ = 1". The correction's own α, β (from a Pareto-input recipe) are cut off in every available
#: copy, so α, β here solve E[s(z)] = 0, E[s(z)²] = 1 for z ~ N(0, 1) with c = γ = 1 -- the conditions
#: (3)-(4) the correction restates -- as ``spocu fit --fix c=1 --fix gamma=1`` prints them
#: (:func:`spocu.science.fit`; tests/test_experiments/test_presets.py recomputes them).
CORRECTION_ALPHA = 2.195915250507829
CORRECTION_BETA = 0.6641098973577741
#: the correction's variant as an activation string (c = γ = 1; α, β fitted as above)
SPOCU_CORRECTION = f"spocu(alpha={CORRECTION_ALPHA!r}, beta={CORRECTION_BETA!r}, gamma=1, c=1)"

#: Where each value of a ``paper-*`` preset comes from (shown in the report and results.json). Only the
#: abstract of the paper is available (see docs/compare.md): it names the datasets and that SPOCU was
#: compared with SELU and ReLU, nothing about architectures or training.
PAPER_PROVENANCE: dict[str, str] = {
    "dataset": "the paper (abstract: WDBC; MNIST for the comparison with SELU and ReLU)",
    "activations spocu, selu, relu": "the paper (abstract: SPOCU compared with SELU and ReLU)",
    "spocu: alpha=3.0937, beta=0.6653, gamma=4.437, c=inf": "the 0.0.1 package (pacocp/spocu-pytorch), not found in the paper or the correction",
    SPOCU_CORRECTION: "the correction (doi 10.1007/s00521-020-05412-6): c = gamma = 1; alpha, beta: spocu fit --fix c=1 --fix gamma=1 "
    "(E[s]=0, E[s^2]=1 under N(0,1); the correction's own alpha, beta are not in the available text)",
    "model, optimizer, lr, batch size, epochs, init, seeds": "not from the paper (its architectures and training are not available): spocu's choices",
}

#: Named experiments. ``seed-cifar10`` is the seed's CIFAR-10 experiment (Keras defaults:
#: Glorot-uniform weights, zero biases); ``paper-*`` compare SPOCU with SELU and ReLU on the
#: paper's datasets (the paper's architectures are not available, so an MLP is used), SPOCU both
#: as the 0.0.1 package had it (the reference) and as the correction fixes it (:data:`SPOCU_CORRECTION`);
#: ``provenance`` says where each value comes from (:data:`PAPER_PROVENANCE`).
PRESETS: dict[str, dict[str, Any]] = {
    "seed-cifar10": {
        "dataset": "cifar10",
        "model": "seed-cnn",
        "activations": ("spocu", "relu"),
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 100,
        "epochs": 50,
        "init": "glorot-uniform",
    },
    # He et al. 2016, Sec. 4.2: SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at
    # 32k and 48k iterations, 64k in all, on 45k training images: 352 steps an epoch, so epochs 91 and 136 of 182.
    # Unlike the paper, no data augmentation (4-pixel padding + random crop + flips): expect less than its 91.25%.
    # SPOCU with its default c = inf grows like x^8 and overflows on the residual sums (inf by the 4th block at
    # initialization, before any step); spocu(c=1) saturates and trains: it is the SPOCU compared here.
    "resnet20-cifar10": {
        "dataset": "cifar10",
        "model": "resnet20",
        "activations": ("spocu(c=1)", "relu", "selu"),
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr": 0.1,
        "lr_milestones": (91, 136),
        "batch_size": 128,
        "epochs": 182,
    },
    "paper-wdbc": {
        "dataset": "wdbc",
        "model": "mlp",
        "hidden": (64, 64),
        "activations": ("spocu", SPOCU_CORRECTION, "selu", "relu"),
        "seeds": 10,
        "provenance": PAPER_PROVENANCE,
    },
    "paper-mnist": {
        "dataset": "mnist",
        "model": "mlp",
        "hidden": (256, 256),
        "activations": ("spocu", SPOCU_CORRECTION, "selu", "relu"),
        "provenance": PAPER_PROVENANCE,
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 128,
        "epochs": 20,
    },
}

#: the activations compared by default: SPOCU as the 0.0.1 package defined it (c = inf, the reference, first),
#: its bounded form c = 1, and the two activations the paper compared it with
DEFAULT_ACTIVATIONS = ("spocu", "spocu(c=1)", "relu", "selu")

_GLOBAL_DEFAULTS: dict[str, Any] = {
    "dataset": "wdbc",
    "activations": DEFAULT_ACTIVATIONS,
    "seeds": 5,
    "first_seed": 0,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "momentum": 0.0,
    "init": "customary",
    "val_size": None,
    "test_size": None,
    "split_seed": 0,
    "split": "per-seed",
    "framework": "torch",
    "keras_backend": None,
    "depth": None,
    "width": None,
    "swap": None,
    "allow_partial_swap": False,
    "lr_milestones": (),
    "target": None,
    "image_size": None,
    "tune": None,
}

#: The options :func:`resolve_config` takes: ``spocu compare``'s experiment options, each by its argparse name
#: (``--batch-size`` -> ``batch_size``); ``seeds`` is a count. The command line passes exactly these.
OPTIONS: tuple[str, ...] = ("preset", "model", "hidden", "epochs", "batch_size", "lr", *_GLOBAL_DEFAULTS)

#: Defaults for the user's data (``--dataset PATH``): tables and arrays get an MLP, image folders the seed's CNN.
USER_DATA_DEFAULTS: dict[str, Any] = {"model": "mlp", "hidden": (64, 64), "epochs": 20, "batch_size": 64, "lr": 1e-3}
USER_IMAGES_DEFAULTS: dict[str, Any] = {"model": "seed-cnn", "epochs": 20, "batch_size": 64, "lr": 1e-3}


@dataclass(frozen=True)
class ExperimentConfig:
    """A fully resolved experiment (see the module docstring for protocol vs grid)."""

    dataset: str
    model: ModelSpec
    #: the activations, parsed once (strings given here are parsed in ``__post_init__``), each with the init
    #: it trains with (``init``); their ``canonical`` strings appear only in files, hashes and reports
    activations: tuple[ActivationSpec, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0
    init: str = "customary"
    val_size: float | None = None
    test_size: float | None = None
    split_seed: int = 0
    framework: str = "torch"
    keras_backend: str | None = None
    lr_milestones: tuple[int, ...] = ()
    target: str | None = None
    image_size: tuple[int, int] | None = None
    data_sha256: str | None = None
    #: "merged": the training set ends on a batch of one sample, trained with the batch before it
    #: (:func:`~spocu.experiments.seeding.batch_bounds`); None otherwise (and absent from the protocol)
    last_batch: str | None = None
    preset: str | None = field(default=None, compare=False)
    #: "lr": each activation's learning rate is chosen on the validation split (:meth:`tune_grid`, :meth:`tune_seeds`)
    tune: str | None = None
    #: the tuning's outcome, activation -> chosen learning rate (set by :mod:`spocu.experiments.run.tuning`);
    #: not in the protocol: each run file records its ``lr``, checked against it on resume
    learning_rates: tuple[tuple[ActivationSpec, float], ...] = field(default=(), compare=False)
    #: ``per-seed``: each seed draws its own stratified split (data without an official test set); ``fixed``: one split
    split: str = "fixed"

    def __post_init__(self) -> None:
        for name, option in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("split_seed", "--split-seed")):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{option} must be a whole number, got {getattr(self, name)!r}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"--momentum must lie in [0, 1), got {self.momentum}")
        if self.momentum and self.optimizer not in MOMENTUM_OPTIMIZERS:
            raise ValueError(
                f"--momentum applies to {' and '.join(MOMENTUM_OPTIMIZERS)}; {self.optimizer} has none "
                "(its moments are set by its betas): drop --momentum or choose --optimizer sgd or rmsprop"
            )
        if self.split not in SPLIT_MODES:
            raise ValueError(f"--split must be one of {', '.join(SPLIT_MODES)}, got {self.split!r}")
        if not 0 <= self.split_seed < 2**32:
            raise ValueError(f"--split-seed must lie in [0, 2**32), got {self.split_seed}")
        for value, option in ((self.val_size, "--val-size"), (self.test_size, "--test-size")):
            if value is not None:
                check_split_size(value, option)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in ("customary", OWN_INIT) and self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; choose customary or one of {', '.join(INIT_SCHEMES)}")
        if self.tune not in (None, *TUNABLE):
            raise ValueError(f"--tune {self.tune}: choose one of {', '.join(TUNABLE)}")
        if not self.activations:
            raise ValueError("no activations to compare")
        if not self.seeds:
            raise ValueError("no seeds")
        # the one place activation strings are parsed; a spec given (dataclasses.replace keeps them) is not
        specs = tuple(_activation(a).with_init(self.init) for a in self.activations)
        canonical = [s.canonical for s in specs]
        duplicates = sorted({c for c in canonical if canonical.count(c) > 1})
        if duplicates:
            raise ValueError(f"activation listed twice: {', '.join(duplicates)}")
        object.__setattr__(self, "activations", specs)
        rates = tuple((_activation(a), lr) for a, lr in self.learning_rates)
        object.__setattr__(self, "learning_rates", rates)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be whole numbers >= 0, got {self.seeds}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {self.framework!r}; choose one of {', '.join(FRAMEWORKS)}")
        if self.keras_backend is not None and self.framework != "keras":
            raise ValueError(
                f"a Keras backend ({self.keras_backend}) applies to --framework keras, not {self.framework}"
            )
        milestones = tuple(self.lr_milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) for m in milestones) or any(
            b <= a for a, b in zip((0, *milestones), milestones)
        ):
            raise ValueError(
                f"--lr-milestones must be increasing whole epochs >= 1, got {','.join(map(str, milestones))}"
            )
        object.__setattr__(self, "lr_milestones", milestones)
        if self.init == OWN_INIT and not self.model.is_factory:
            raise ValueError(
                f"init {OWN_INIT!r} (the model's own) applies to a model factory, not to {self.model.name}"
            )
        if not self.user_data and (self.target is not None or self.image_size is not None):
            option = "--target" if self.target is not None else "--image-size"
            raise ValueError(f"{option} applies to your own data (--dataset PATH), not to {self.dataset}")
        if self.last_batch not in (None, "merged"):
            raise ValueError(f"last_batch must be None or 'merged', got {self.last_batch!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise ValueError(f"--image-size needs two whole numbers H W >= 1, got {self.image_size}")
            object.__setattr__(self, "image_size", size)

    @property
    def user_data(self) -> bool:
        """The dataset is the user's file or folder (``--dataset PATH``), not a built-in one."""
        return self.dataset not in DATASETS

    def activation_specs(self) -> list[ActivationSpec]:
        """Deprecated: ``activations`` holds the specs (each with the init it trains with)."""
        import warnings

        warnings.warn(
            "ExperimentConfig.activation_specs() is deprecated: ExperimentConfig.activations holds the ActivationSpec objects",
            DeprecationWarning,
            stacklevel=2,
        )
        return list(self.activations)

    def lr_for(self, activation: ActivationSpec | str) -> float:
        """The learning rate ``activation`` trains with: the tuned one (``--tune lr``), else ``lr``.

        A string is looked up by its canonical form (``spocu(c=1)``), not parsed.
        """
        for spec, lr in self.learning_rates:
            if spec == activation or spec.canonical == activation:
                return lr
        return self.lr

    def tune_grid(self) -> tuple[float, ...]:
        """``--tune lr``'s grid: :data:`TUNE_POINTS` log-spaced rates from lr/10 to lr x 10 (lr in the middle).

        Example:
            >>> [f"{v:.3g}" for v in resolve_config({"tune": "lr"}).tune_grid()]
            ['0.0001', '0.000316', '0.001', '0.00316', '0.01']
        """
        half = (TUNE_POINTS - 1) // 2
        return tuple(float(self.lr * 10 ** ((k - half) / half * TUNE_DECADES)) for k in range(TUNE_POINTS))

    def tune_seeds(self) -> tuple[int, ...]:
        """The seeds the tuning runs use: the first :data:`TUNE_SEEDS` from the first seed (whatever the seed count,
        so that adding seeds to a tuned experiment keeps its tuning)."""
        first = min(self.seeds)
        return tuple(range(first, first + TUNE_SEEDS))

    @property
    def reference(self) -> ActivationSpec:
        """The activation the others are tested against (the first)."""
        return self.activations[0]

    def protocol(self) -> dict[str, Any]:
        """Everything that defines one run (not the grid); stored in and checked against ``config.json``."""
        data = asdict(self)
        for key in ("activations", "seeds", "preset", "learning_rates"):
            data.pop(key)
        if self.tune is None:  # absent unless used: untuned protocols (and their hashes) stay as they were
            data.pop("tune")
        else:
            data["tune"] = {"parameter": self.tune, "grid": list(self.tune_grid()), "seeds": list(self.tune_seeds()),
                            "score": TUNE_SCORE}  # fmt: skip
        if self.keras_backend is None:  # absent, not null: torch protocols (and their hashes) stay as they were
            data.pop("keras_backend")
        if self.split == "fixed":  # absent = one fixed split, as every protocol before --split (their hashes stay)
            data.pop("split")
        for key in (
            "lr_milestones",
            "target",
            "image_size",
            "data_sha256",
            "last_batch",
        ):  # likewise, absent unless used
            if data[key] in (None, ()):
                data.pop(key)
            elif isinstance(data[key], tuple):
                data[key] = list(data[key])
        if self.user_data:  # the file's name and content hash, not where it lies: resuming from elsewhere works
            data["dataset"] = Path(self.dataset).name
        data["model"] = self.model.protocol()
        return data

    def protocol_hash(self) -> str:
        """The first 12 hex digits of the SHA-256 of :meth:`protocol` as sorted compact JSON (run files carry it)."""
        text = json.dumps(self.protocol(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """``config.json``'s content: the protocol, the grid (activations by their canonical names, seeds), the preset
        and, after ``--tune lr``, the chosen rates."""
        data = {
            **self.protocol(),
            "activations": [spec.canonical for spec in self.activations],
            "seeds": list(self.seeds),
            "preset": self.preset,
        }
        if self.learning_rates:
            data["learning_rates"] = {spec.canonical: lr for spec, lr in self.learning_rates}
        return data

    def with_grid(
        self,
        activations: tuple[ActivationSpec | str, ...] | None = None,
        seeds: tuple[int, ...] | None = None,
    ) -> ExperimentConfig:
        """The same protocol with another grid (activations as specs or names; None keeps the current one)."""
        grid = cast("tuple[ActivationSpec, ...]", activations or self.activations)  # __post_init__ parses strings
        return replace(self, activations=grid, seeds=seeds or self.seeds)


def _activation(value: ActivationSpec | str) -> ActivationSpec:
    """``value`` as a spec: a string (the Python API's, a preset's, a file's) is parsed, a spec kept."""
    if isinstance(value, ActivationSpec):
        return value
    if not isinstance(value, str):
        raise ValueError(f"an activation is a name such as 'spocu(c=1)' or an ActivationSpec, got {value!r}")
    return parse_activation(value)


def _activation_items(value: Any) -> tuple[ActivationSpec | str, ...]:
    """The activations option: specs, and strings that may list several (``"spocu(c=1), relu"``, as --activations takes them)."""
    items = [value] if isinstance(value, (str, ActivationSpec)) else list(value)
    return tuple(part for item in items for part in (split_activation_list(item) if isinstance(item, str) else [item]))


def resolve_config(options: dict[str, Any]) -> ExperimentConfig:
    """Build the config from options (None = not given), a preset and the dataset's defaults.

    Keys (:data:`OPTIONS`; another is refused): preset, dataset, model, hidden, depth, width, activations, seeds (count), first_seed,
    epochs, batch_size, optimizer, lr, weight_decay, momentum, init, val_size, test_size,
    split_seed, split, framework, keras_backend, swap, allow_partial_swap, lr_milestones, target,
    image_size, tune. ``activations``: names (a string may list several, ``"spocu(c=1), relu"``) or
    :class:`~spocu.experiments.activations.ActivationSpec` objects, parsed and checked here, once.

    ``dataset`` may be a path (:mod:`spocu.experiments.data.user_data`) and ``model`` a factory
    (:mod:`spocu.experiments.models.factories`; not imported here: :func:`with_model_source` does
    that once the engine is chosen); a factory keeps its own initialization unless ``init`` is given.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown experiment option(s) {', '.join(unknown)}; the options are {', '.join(OPTIONS)}")
    given = {k: v for k, v in options.items() if v is not None}
    preset_name = given.pop("preset", None)
    if preset_name is not None and preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset = {k: v for k, v in PRESETS.get(preset_name, {}).items() if k != "provenance"}
    dataset = str(given.get("dataset", preset.get("dataset", _GLOBAL_DEFAULTS["dataset"])))
    if dataset in DATASETS:
        dataset_defaults = DATASET_DEFAULTS[dataset]
    elif is_user_dataset(dataset):
        dataset_defaults = USER_IMAGES_DEFAULTS if Path(dataset).expanduser().is_dir() else USER_DATA_DEFAULTS
    else:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}, or give a path (.csv, .parquet, .npz or a folder of images)"
        )
    merged = {**_GLOBAL_DEFAULTS, **dataset_defaults, **preset, **given}
    if "hidden" in given and merged["model"] != "mlp":
        raise ValueError(f"hidden sizes apply to mlp, not {merged['model']} (deep-mlp takes depth and width)")
    if ("depth" in given or "width" in given) and merged["model"] != "deep-mlp":
        raise ValueError(f"depth and width apply to deep-mlp, not {merged['model']}")
    if is_model_factory(str(merged["model"])):
        if any(key in given for key in ("hidden", "depth", "width")):
            raise ValueError(
                "--hidden, --depth and --width apply to the built-in mlp and deep-mlp, not to a model factory"
            )
        swap = parse_swap(merged["swap"])
        if merged.get("allow_partial_swap") and swap is None:
            raise ValueError("--allow-partial-swap applies with --swap")
        # imported (and its source hashed, source_sha256) once the engine is chosen: see with_model_source
        model = ModelSpec(str(merged["model"]), (), swap, allow_partial_swap=bool(merged.get("allow_partial_swap")))
        if "init" not in given and "init" not in preset:
            merged["init"] = OWN_INIT
    else:
        if merged["swap"] is not None or merged.get("allow_partial_swap"):
            raise ValueError(
                f"--swap applies to a model factory (--model MODULE:FUNCTION or file.py:FUNCTION), not to {merged['model']}"
            )
        model = ModelSpec.make(merged["model"], merged.get("hidden"), merged.get("depth"), merged.get("width"))
    count = int(merged["seeds"])
    if count < 1:
        raise ValueError(f"--seeds must be >= 1, got {count}")
    if count > MAX_SEEDS:  # each seed is a training run per activation: more is a typo, not an experiment
        raise ValueError(f"--seeds {count} is more than {MAX_SEEDS:,} seeds; each seed trains every activation once")
    first = int(merged["first_seed"])
    if first < 0:
        raise ValueError(f"--first-seed must be >= 0, got {first}")
    # an explicit default is the default: the same protocol (and hash) as the option omitted
    val_size, test_size = merged["val_size"], merged["test_size"]
    if val_size is not None and val_size == DEFAULT_VAL_SIZE.get(dataset):
        val_size = None
    # a user's file may or may not have its own test split: the loader knows (split_dataset refuses it there)
    if test_size is not None and dataset in DATASETS and dataset not in EMBEDDED_DATASETS:
        raise ValueError(
            f"--test-size applies to {' and '.join(EMBEDDED_DATASETS)}; {dataset} has an official test set"
        )
    if test_size is not None and test_size == DEFAULT_TEST_SIZE:
        test_size = None
    split = merged["split"]
    if dataset in DATASETS and dataset not in EMBEDDED_DATASETS:  # an official test set keeps its split
        if given.get("split") == "per-seed":
            raise ValueError(
                f"--split per-seed applies to data without an official test set; {dataset} keeps its official test set"
            )
        split = "fixed"
    return ExperimentConfig(
        dataset=dataset,
        model=model,
        activations=cast(
            "tuple[ActivationSpec, ...]", _activation_items(merged["activations"])
        ),  # parsed in __post_init__
        seeds=tuple(range(first, first + count)),
        epochs=int(merged["epochs"]),
        batch_size=int(merged["batch_size"]),
        optimizer=merged["optimizer"],
        lr=float(merged["lr"]),
        weight_decay=float(merged["weight_decay"]),
        momentum=float(merged["momentum"]),
        init=merged["init"],
        val_size=val_size,
        test_size=test_size,
        split_seed=int(merged["split_seed"]),
        framework=merged["framework"],
        keras_backend=merged["keras_backend"],
        lr_milestones=tuple(int(m) for m in merged["lr_milestones"]),
        target=merged["target"],
        # its length is checked in __post_init__
        image_size=cast(
            "tuple[int, int] | None",
            None if merged["image_size"] is None else tuple(int(v) for v in merged["image_size"]),
        ),
        preset=preset_name,
        tune=merged["tune"],
        split=split,
    )


def check_data_dir(config: ExperimentConfig, data_dir: str | Path | None) -> None:
    """Raise ValueError unless ``data_dir`` (``--data-dir``: your copies of the files) fits the config's dataset.

    It applies to the built-in datasets read from files (mnist, cifar10): not to those embedded in
    scikit-learn, nor to your own data (``--dataset PATH``). Checked once, where the spec is built;
    the loaders take it as given.

    Example:
        >>> check_data_dir(resolve_config({"preset": "seed-cifar10"}), "~/.keras/datasets")
        >>> check_data_dir(resolve_config({}), "/data")
        Traceback (most recent call last):
        ...
        ValueError: --data-dir applies to datasets read from files (mnist, cifar10); wdbc is embedded in scikit-learn
    """
    if data_dir is None:
        return
    if config.user_data:
        raise ValueError(
            f"--data-dir applies to the built-in datasets read from files (mnist, cifar10), not to --dataset {config.dataset}"
        )
    if config.dataset in EMBEDDED_DATASETS:
        raise ValueError(
            f"--data-dir applies to datasets read from files (mnist, cifar10); {config.dataset} is embedded in scikit-learn"
        )
    if not str(data_dir).strip():
        raise ValueError("--data-dir is empty")


def with_model_source(config: ExperimentConfig) -> tuple[ExperimentConfig, ModelFactory | None]:
    """For a model factory: import it, check its signature, and put its source hash into the protocol.

    Returns ``(config, factory)`` (``factory`` None for the built-in models).

    Raises:
        UserModelError: the factory does not import or has the wrong signature (a ValueError).
    """
    if not config.model.is_factory:
        return config, None
    from spocu.experiments.models.factories import load_factory

    factory = load_factory(config.model.name, config.model.swap)
    return replace(config, model=replace(config.model, source_sha256=factory.source_sha256)), factory

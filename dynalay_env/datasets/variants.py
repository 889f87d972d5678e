"""Task variants of a dataset: noisy labels and corrupted inputs, fixed by a seed.

Two transforms of a loaded :class:`~dynalay_env.datasets.Dataset`, each deterministic across processes
and machines (numpy ``Generator`` streams seeded from the option's own fields and the split name,
never Python's ``hash``; the image operations are scipy's plain C loops in float64):

* :class:`LabelNoise` replaces a fixed-seed share of the labels of some classes by uniformly random
  labels, in every split (crowd-labelled data). Continuing cannot fix a wrong label.
* :class:`Corruption` gives each ``agent_train``, ``val`` and ``test`` example a fixed-seed kind
  (Gaussian noise, blur, rotation or occlusion, as in MNIST-C) and a severity 0-4 (0 = clean).
  ``model_train`` stays clean: the main model is pre-trained on clean data only and meets the
  corruptions as a deployed model would.

:func:`apply_variants` returns a :class:`VariantDataset`, which carries the per-example facts the env
copies into ``info`` (:data:`EXAMPLE_INFO_KEYS`): ``noisy_label`` (bool, the stored label differs
from the true one) and ``severity`` (int64, -1 where nothing was corrupted). :func:`example_info`
gives these arrays for any dataset (False / -1 for a plain one), so every env's ``info`` has the same
keys, dtypes and shapes.

Registered variants (:data:`VARIANTS`, names accepted wherever a dataset name is):

=========================  ======================================================================
name                       recipe
=========================  ======================================================================
``mnist5k_noisy_labels``   ``mnist5k`` with 30 % of the labels of classes 0-4 resampled (seed 0)
``mnist5k_corrupted``      ``mnist5k`` with every non-``model_train`` example corrupted (seed 0)
=========================  ======================================================================

Other variants: ``register_variant("mnist5k_blurred", "mnist5k", corruption=Corruption(kinds=("blur",)))``
makes the name usable everywhere a dataset name is (``gym.make("DynaLay-v0", dataset=...)``, the
default model's pre-training, checkpoints); :func:`apply_variants` alone gives a ``Dataset`` object
to pass with your own ``model=``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynalay_env.datasets.base import SPLITS, Dataset
from dynalay_env.datasets.registry import DatasetLoader, load_dataset, register_dataset

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_SPLITS",
    "EXAMPLE_INFO_KEYS",
    "MAX_SEVERITY",
    "VARIANTS",
    "Corruption",
    "LabelNoise",
    "VariantDataset",
    "apply_variants",
    "corrupt_images",
    "example_info",
    "register_variant",
    "variant_loader",
    "variant_summary",
]

#: Corruption kinds, in the order of their ids (``VariantDataset.examples[split]["corruption"]``).
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "blur", "rotation", "occlusion")
#: Highest severity; severities are 0 (clean) .. MAX_SEVERITY.
MAX_SEVERITY = 4
#: The splits a :class:`Corruption` touches (``model_train`` stays clean).
CORRUPTION_SPLITS: tuple[str, ...] = ("agent_train", "val", "test")
#: Per-example keys the env copies into ``info``: ``noisy_label`` bool, ``severity`` int64.
EXAMPLE_INFO_KEYS: tuple[str, ...] = ("noisy_label", "severity")

# Strength of each kind per severity 0..4, for inputs in [0, 1]: chosen in the spirit of MNIST-C
# (Mu & Gilmer 2019); the pixels move further at every step (tests/test_variants.py).
_NOISE_STD = (0.0, 0.08, 0.16, 0.24, 0.32)  # Gaussian noise std, then clipped to [0, 1]
_BLUR_SIGMA = (0.0, 0.5, 0.8, 1.1, 1.4)  # Gaussian blur sigma, pixels
_ROTATION_DEG = (0.0, 15.0, 30.0, 45.0, 60.0)  # rotation angle, degrees, random sign
_OCCLUSION_FRACTION = (0.0, 0.2, 0.3, 0.4, 0.5)  # side of the blanked square / image side


def _stream(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded from ``parts`` through sha256 (stable across processes and machines)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(list(np.frombuffer(digest, dtype=np.uint32))))


@dataclass(frozen=True)
class LabelNoise:
    """Replace a share of the labels of some classes by uniformly random labels, in every split.

    Attributes:
        rate: Share in [0, 1] of each split's examples of ``classes`` whose label is resampled
            (exactly ``round(rate * count)`` per split).
        classes: True classes whose labels may be resampled; None = every class.
        seed: Seed of the choice of examples and of the new labels.

    A resampled label is drawn uniformly from all classes, so it keeps the true class with
    probability 1/K; ``noisy_label`` marks only the labels that changed.
    """

    rate: float
    classes: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"LabelNoise.rate must be in [0, 1], got {self.rate!r}")
        if self.classes is not None:
            classes = tuple(sorted({int(c) for c in self.classes}))
            if not classes or classes[0] < 0:
                raise ValueError(f"LabelNoise.classes must be non-negative class ids or None, got {self.classes!r}")
            object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "seed", int(self.seed))

    def resample(self, y: np.ndarray, num_classes: int, split: str) -> np.ndarray:
        """The noisy labels of one split: int64 ``[N]`` (a new array; ``y`` is not modified)."""
        if self.classes is not None and self.classes[-1] >= num_classes:
            raise ValueError(f"LabelNoise.classes {self.classes} name a class >= num_classes ({num_classes})")
        rng = _stream("label_noise", self.rate, self.classes, self.seed, split)
        members = np.flatnonzero(np.isin(y, self.classes) if self.classes is not None else np.ones(len(y), bool))
        chosen = rng.permutation(members)[: int(round(self.rate * len(members)))]
        noisy = np.array(y, dtype=np.int64, copy=True)
        noisy[np.sort(chosen)] = rng.integers(0, num_classes, size=len(chosen))
        return noisy


@dataclass(frozen=True)
class Corruption:
    """Corrupt each ``agent_train``, ``val`` and ``test`` input with one kind at one severity.

    Attributes:
        kinds: Kinds to draw from (uniformly per example), a subset of :data:`CORRUPTIONS`.
        seed: Seed of the kinds, severities and the corruptions' own randomness.

    Severities 0..4 are drawn uniformly per example (0 leaves the input clean). Inputs are images
    ``[N, C, H, W]`` with values in [0, 1]; the result is clipped to [0, 1].
    """

    kinds: tuple[str, ...] = CORRUPTIONS
    seed: int = 0

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        bad = [k for k in kinds if k not in CORRUPTIONS]
        if not kinds or bad:
            raise ValueError(f"Corruption.kinds must be a non-empty subset of {list(CORRUPTIONS)}, got {list(kinds)}")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "seed", int(self.seed))

    def draw(self, n: int, split: str) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """``(kind ids int64 [n] into CORRUPTIONS, severities int64 [n] in 0..4, the split's stream)``."""
        rng = _stream("corruption", self.kinds, self.seed, split)
        kind_ids = np.array([CORRUPTIONS.index(k) for k in self.kinds], dtype=np.int64)[rng.integers(0, len(self.kinds), n)]
        severity = rng.integers(0, MAX_SEVERITY + 1, n).astype(np.int64)
        return kind_ids, severity, rng


def corrupt_images(x: np.ndarray, kind_ids: np.ndarray, severity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corrupt images ``x`` float ``[N, C, H, W]`` in [0, 1]: float32 ``[N, C, H, W]`` in [0, 1].

    ``kind_ids`` (int ``[N]``, into :data:`CORRUPTIONS`) and ``severity`` (int ``[N]``, 0..4) say what
    each example gets; ``rng`` draws the noise, rotation signs and occlusion positions, in a fixed
    order (kind by kind, severity by severity), so the result depends only on its arguments.
    """
    # Imported here: scipy.ndimage adds about 0.6 s to every `import dynalay_env`, and only the
    # corrupted variants need it (when their dataset is first loaded).
    from scipy import ndimage

    if x.ndim != 4:
        raise ValueError(f"corruptions need images [N, C, H, W], got an array of shape {x.shape}")
    n, _, h, w = x.shape
    if kind_ids.shape != (n,) or severity.shape != (n,):
        raise ValueError(f"kind_ids and severity must have shape ({n},), got {kind_ids.shape} and {severity.shape}")
    out = np.array(x, dtype=np.float64, copy=True)
    for kind_id, kind in enumerate(CORRUPTIONS):
        for s in range(1, MAX_SEVERITY + 1):
            rows = np.flatnonzero((kind_ids == kind_id) & (severity == s))
            if rows.size == 0:
                continue
            group = out[rows]
            if kind == "gaussian_noise":
                group = group + _NOISE_STD[s] * rng.standard_normal(group.shape)
            elif kind == "blur":
                group = ndimage.gaussian_filter(group, sigma=(0, 0, _BLUR_SIGMA[s], _BLUR_SIGMA[s]), mode="constant")
            elif kind == "rotation":
                signs = rng.choice(np.array([-1.0, 1.0]), size=rows.size)
                for sign in (-1.0, 1.0):
                    sel = signs == sign
                    if sel.any():
                        group[sel] = ndimage.rotate(group[sel], sign * _ROTATION_DEG[s], axes=(3, 2), reshape=False,
                                                    order=1, mode="constant", cval=0.0)
            else:  # occlusion: a blanked square at a random position
                side_h = max(1, int(round(_OCCLUSION_FRACTION[s] * h)))
                side_w = max(1, int(round(_OCCLUSION_FRACTION[s] * w)))
                top = rng.integers(0, h - side_h + 1, rows.size)
                left = rng.integers(0, w - side_w + 1, rows.size)
                inside_h = (np.arange(h)[None, :] >= top[:, None]) & (np.arange(h)[None, :] < (top + side_h)[:, None])
                inside_w = (np.arange(w)[None, :] >= left[:, None]) & (np.arange(w)[None, :] < (left + side_w)[:, None])
                group = np.where((inside_h[:, :, None] & inside_w[:, None, :])[:, None], 0.0, group)
            out[rows] = group
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True, eq=False, repr=False)  # the Dataset's short repr, not every array
class VariantDataset(Dataset):
    """A :class:`~dynalay_env.datasets.Dataset` made by :func:`apply_variants`, with per-example facts.

    Attributes (besides the Dataset's):
        base: Registry name of the dataset it was made from.
        variant: ``{"label_noise": {...} | None, "corruption": {...} | None}``, the options' fields.
        examples: ``split -> {"noisy_label": bool [N], "severity": int64 [N] (-1 = not corrupted),
            "corruption": int64 [N] (index into CORRUPTIONS, -1 = none: severity 0 or -1),
            "true_label": int64 [N]}``,
            read-only.
    """

    base: str = ""
    variant: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        checked: dict[str, dict[str, np.ndarray]] = {}
        for split in SPLITS:
            n = self.num_examples(split)
            given = self.examples.get(split, {})
            checked[split] = {}
            for key, dtype in (("noisy_label", bool), ("severity", np.int64), ("corruption", np.int64),
                               ("true_label", np.int64)):
                if key not in given:
                    raise ValueError(f"VariantDataset {self.name!r}: examples[{split!r}] lacks {key!r}")
                arr = np.ascontiguousarray(given[key], dtype=dtype)
                if arr.shape != (n,):
                    raise ValueError(f"VariantDataset {self.name!r}: examples[{split!r}][{key!r}] has shape "
                                     f"{arr.shape}, expected ({n},)")
                arr.flags.writeable = False
                checked[split][key] = arr
        object.__setattr__(self, "examples", checked)


def apply_variants(dataset: Dataset, *, label_noise: LabelNoise | None = None, corruption: Corruption | None = None,
                   name: str | None = None) -> VariantDataset:
    """``dataset`` with noisy labels and/or corrupted inputs (at least one option).

    Args:
        dataset: The clean dataset (its arrays are not modified).
        label_noise: Resample labels in every split (:class:`LabelNoise`).
        corruption: Corrupt the inputs of ``agent_train``, ``val`` and ``test`` (:class:`Corruption`);
            needs image inputs ``(C, H, W)``.
        name: Name of the result (default ``"<base>+<options>"``). Registered variants use their
            registry name, so a default model and its checkpoints follow the variant.

    Returns:
        A :class:`VariantDataset`; its fingerprint covers the changed arrays.
    """
    if label_noise is None and corruption is None:
        raise ValueError("apply_variants needs label_noise=LabelNoise(...), corruption=Corruption(...), or both")
    if corruption is not None and len(dataset.input_shape) != 3:
        raise ValueError(f"corruption needs image inputs (C, H, W); dataset {dataset.name!r} has input_shape "
                         f"{dataset.input_shape}")
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    examples: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        x, y = dataset.split(split)
        n = len(y)
        noisy_y = y if label_noise is None else label_noise.resample(y, dataset.num_classes, split)
        kind_ids = np.full(n, -1, dtype=np.int64)
        severity = np.full(n, -1, dtype=np.int64)
        if corruption is not None and split in CORRUPTION_SPLITS:
            kind_ids, severity, rng = corruption.draw(n, split)
            x = corrupt_images(x, kind_ids, severity, rng)
            kind_ids = np.where(severity > 0, kind_ids, -1)  # severity 0 leaves the input clean
        splits[split] = (x, noisy_y)
        examples[split] = {"noisy_label": noisy_y != y, "severity": severity, "corruption": kind_ids,
                           "true_label": np.array(y, dtype=np.int64)}
    variant = {"label_noise": None if label_noise is None else asdict(label_noise),
               "corruption": None if corruption is None else asdict(corruption)}
    if name is None:
        parts = [f"label_noise={label_noise.rate:g}" if label_noise else "", "corrupted" if corruption else ""]
        name = f"{dataset.name}+{'+'.join(p for p in parts if p)}"
    info = {**dataset.info, "base": dataset.name, "base_fingerprint": dataset.fingerprint, "variant": variant}
    return VariantDataset(name, dataset.input_shape, dataset.num_classes, splits, difficulty=dataset.difficulty,
                          info=info, base=dataset.name, variant=variant, examples=examples)


def example_info(dataset: Dataset | None, split: str, num_examples: int | None = None) -> dict[str, np.ndarray]:
    """The per-example ``info`` arrays of one split: ``noisy_label`` bool ``[N]`` and ``severity`` int64 ``[N]``.

    A plain dataset (or None, with ``num_examples`` given: examples passed directly to the env) gets
    False and -1, so the env's ``info`` keys are the same for every dataset.
    """
    if isinstance(dataset, VariantDataset):
        return {key: dataset.examples[split][key] for key in EXAMPLE_INFO_KEYS}
    n = dataset.num_examples(split) if dataset is not None else num_examples
    if n is None:
        raise ValueError("example_info needs a dataset or num_examples")
    return {"noisy_label": np.zeros(n, dtype=bool), "severity": np.full(n, -1, dtype=np.int64)}


#: The built-in variants, ``name -> (base dataset, label_noise, corruption)``; the package registers
#: them with the other datasets, and :func:`register_variant` adds to it.
VARIANTS: dict[str, tuple[str, LabelNoise | None, Corruption | None]] = {
    "mnist5k_noisy_labels": ("mnist5k", LabelNoise(0.3, classes=(0, 1, 2, 3, 4), seed=0), None),
    "mnist5k_corrupted": ("mnist5k", None, Corruption(seed=0)),
}


def variant_loader(name: str, base: str, label_noise: LabelNoise | None = None,
                   corruption: Corruption | None = None) -> DatasetLoader:
    """A registry loader ``(data_root, cache_dir) -> Dataset``: ``base`` with the options applied,
    named ``name``."""
    def loader(data_root: Path | None, cache_dir: Path) -> Dataset:
        clean = load_dataset(base, data_root=data_root, cache_dir=cache_dir)
        return apply_variants(clean, label_noise=label_noise, corruption=corruption, name=name)

    loader.__doc__ = f"{name}: {base} with label_noise={label_noise}, corruption={corruption}."
    return loader


def register_variant(name: str, base: str, *, label_noise: LabelNoise | None = None,
                     corruption: Corruption | None = None, overwrite: bool = False) -> None:
    """Register ``name`` in the dataset registry as ``base`` with the given options applied.

    The default model of a new name is pre-trained with ``dynalay_env.pretrain.recipe_for(name)``:
    the generic recipe unless ``DATASET_RECIPES`` names it (the built-in variants use their base's)."""
    register_dataset(name, variant_loader(name, base, label_noise, corruption), overwrite=overwrite)
    VARIANTS[name] = (base, label_noise, corruption)


def variant_summary(dataset: Dataset) -> Mapping[str, Any]:
    """Counts of a variant's per-example facts per split (for reports): noisy labels and severities."""
    if not isinstance(dataset, VariantDataset):
        return {}
    out: dict[str, Any] = {}
    for split in SPLITS:
        facts = dataset.examples[split]
        sev = facts["severity"]
        out[split] = {"noisy_labels": int(facts["noisy_label"].sum()),
                      "severity_counts": [int((sev == s).sum()) for s in range(MAX_SEVERITY + 1)] if (sev >= 0).any()
                      else []}
    return out

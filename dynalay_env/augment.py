"""Random shifts, small rotations and elastic distortions of image inputs: the ``augment`` option.

With ``augment=True`` an ``agent_train`` env feeds the frozen main model a fresh distortion of each
episode's image (labels unchanged), so a learner sees more distinct inputs than the split holds.
:func:`augment_images` distorts a whole batch at once (the slots that restart together) with one
``torch.nn.functional.grid_sample``: the sampling grid is an affine map (rotation about the
image's centre, then a shift) plus an elastic displacement field (Simard et al., ICDAR 2003: a
uniform random field in [-1, 1] per pixel, Gaussian-smoothed, times ``alpha``).

Randomness is counter-based: image ``i``'s numbers are ``splitmix64(keys[i] + j)`` for
``j = 0, 1, ...`` (:func:`key_uniforms`), so an image's distortion depends on its key only, not on
which other slots restart with it. The env takes the keys from
:meth:`dynalay_env.sampling.ExampleSampler.episode_keys` (the slot's seed and episode count):
``reset(seed=s)`` replays the distortions, and a vector env's slot ``i`` seeded ``s + i`` plays the
episodes of a single env seeded ``s + i``.

Sizes are in pixels of a 28-pixel image (MNIST's) and scale with the image's shorter side, so a
distortion moves a digit by the same share of the image at any resolution. Pixels sampled from
outside the image repeat its border (``padding_mode="border"``: the background of MNIST-like
images whatever their normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dynalay_env.sampling import splitmix64


@dataclass(frozen=True)
class AugmentParams:
    """How strong the distortions are. Lengths are in pixels at a ``reference_side``-pixel image and
    scale with the image's shorter side; angles in degrees.

    Attributes:
        max_shift: each axis is shifted by a uniform amount in ``[-max_shift, max_shift]`` pixels.
        max_rotation: the image turns by a uniform angle in ``[-max_rotation, max_rotation]`` degrees.
        elastic_alpha: scale of the elastic displacement, in pixels (Simard et al.'s alpha).
        elastic_sigma: standard deviation of its Gaussian smoothing, in pixels (their sigma).
        reference_side: the image side, in pixels, the lengths above are given for.
    """

    max_shift: float = 2.0
    max_rotation: float = 10.0
    elastic_alpha: float = 34.0
    elastic_sigma: float = 4.0
    reference_side: int = 28

    def __post_init__(self) -> None:
        for name in ("max_shift", "max_rotation", "elastic_alpha"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"AugmentParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.elastic_sigma > 0 or not self.reference_side > 0:
            raise ValueError(f"AugmentParams.elastic_sigma and reference_side must be > 0, got "
                             f"{self.elastic_sigma!r} and {self.reference_side!r}")


#: The env's distortions: shifts of up to 2 pixels, rotations of up to 10 degrees and Simard et
#: al.'s elastic field (alpha 34, sigma 4 pixels: about 1.8 pixels of displacement per axis, r.m.s.).
DEFAULT_PARAMS = AugmentParams()


def check_image_shape(input_shape: Sequence[int], owner: str = "augment") -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input shape; ``ValueError`` for any other shape (``augment``
    distorts images, not vectors or sequences)."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{owner} needs image inputs of shape [C, H, W]; this dataset's inputs have shape "
                         f"{list(shape)}")
    return shape  # type: ignore[return-value]


def key_uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """``[len(keys), count]`` float64 uniforms in [0, 1): row ``i`` is ``splitmix64(keys[i] + j)``,
    ``j < count``, scaled from its top 53 bits."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        bits = splitmix64(keys + np.arange(count, dtype=np.uint64)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _smoothing_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``[n, n]``: row ``i`` holds the Gaussian weights (``sigma`` pixels, truncated at 3 sigma) of
    the pixels ``j`` of a line of ``n`` pixels, normalised to sum to 1 over the pixels inside the line."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(n, dtype=dtype, device=device)
    distance = offsets[:, None] - offsets[None, :]
    weights = torch.exp(-0.5 * (distance / sigma) ** 2) * (distance.abs() <= radius)
    return weights / weights.sum(1, keepdim=True)


def _gaussian_smooth(field: Tensor, sigma: float) -> Tensor:
    """``field`` ``[m, 2, H, W]`` smoothed by a Gaussian of ``sigma`` pixels per axis (separable,
    truncated at 3 sigma, one small matrix product per axis). Outside the image counts as missing,
    not as zero: each output is divided by the kernel weight that fell inside, so the field does not
    fade at the borders."""
    rows = _smoothing_matrix(field.shape[2], sigma, field.dtype, field.device)
    cols = _smoothing_matrix(field.shape[3], sigma, field.dtype, field.device)
    return rows @ field @ cols.T


def sampling_grid(keys: np.ndarray, height: int, width: int, params: AugmentParams = DEFAULT_PARAMS, *,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``grid_sample`` grid ``[m, H, W, 2]`` (x, y in [-1, 1], ``align_corners=False``) of one
    random distortion per key of ``keys`` (uint64 ``[m]``): for each output pixel, where in the
    input image to read it."""
    m = len(keys)
    scale = min(height, width) / params.reference_side
    u = torch.as_tensor(key_uniforms(keys, 3 + 2 * height * width), dtype=dtype, device=device)
    signed = 2 * u - 1  # uniform in [-1, 1)
    angle = signed[:, 0] * math.radians(params.max_rotation)
    shift_x = signed[:, 1] * params.max_shift * scale  # pixels
    shift_y = signed[:, 2] * params.max_shift * scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    # A rotation in pixel space, written in normalised coordinates (x spans W pixels, y spans H).
    theta = torch.stack([torch.stack([cos, -sin * height / width, 2 * shift_x / width], 1),
                         torch.stack([sin * width / height, cos, 2 * shift_y / height], 1)], 1)
    grid = F.affine_grid(theta, [m, 1, height, width], align_corners=False)
    field = signed[:, 3:].reshape(m, 2, height, width)
    displacement = _gaussian_smooth(field, params.elastic_sigma * scale) * (params.elastic_alpha * scale)  # pixels
    to_normalised = torch.tensor([2.0 / width, 2.0 / height], dtype=dtype, device=device)
    return grid + displacement.permute(0, 2, 3, 1) * to_normalised


def augment_images(x: Tensor, keys: np.ndarray, params: AugmentParams = DEFAULT_PARAMS) -> Tensor:
    """Each image of ``x`` (``[m, C, H, W]``, any float dtype and device) distorted by its own key
    of ``keys`` (uint64 ``[m]``): shifted, rotated and elastically distorted (bilinear, the border
    repeated). Returns a new tensor of ``x``'s shape, dtype and device; the same keys give the same
    images."""
    if x.dim() != 4:
        raise ValueError(f"augment_images needs a batch of images [m, C, H, W], got shape {list(x.shape)}")
    if len(keys) != x.shape[0]:
        raise ValueError(f"got {len(keys)} keys for {x.shape[0]} images")
    if x.shape[0] == 0:
        return x.clone()
    grid = sampling_grid(keys, x.shape[2], x.shape[3], params, device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


__all__ = ["AugmentParams", "DEFAULT_PARAMS", "augment_images", "check_image_shape", "key_uniforms", "sampling_grid"]

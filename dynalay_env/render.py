"""RGB frames of a DynaLay episode (``render_mode="rgb_array"``), drawn with matplotlib's Agg canvas.

One :class:`FrameRenderer` per env draws any slot of its :class:`~dynalay_env.core.DynaLayCore` from
the state the core already holds (the example, the path with each layer's iterations, the head's
logits, the FLOPs spent), so ``step()`` records nothing for rendering and costs the same whatever the
render mode. matplotlib is imported on the first frame, never at package import, and only through
``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` (no pyplot, no global state): one figure per
renderer, redrawn in place.

A frame is ``uint8 [height, width, 3]`` (default 640 x 360), the same size for every slot, step and
dataset. It shows:

* the input: a 1-D signal (``(1, L)`` or ``(L,)``) as a line, an image (``(C, H, W)``, C = 1 or 3, or a
  square vector such as digits' 8 x 8) as a picture;
* the path so far: ``enc`` then one box per applied layer with its FPI iterations, and grey boxes
  for the steps left before the forced exit;
* the head's class probabilities at the current state (the true class in green, the prediction
  outlined);
* the compute spent, normalised (1.0 = the full-depth model) and in MFLOPs, as a bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from dynalay_env.core import DynaLayCore

# Frame size: 16:9, small enough for GIFs.
FRAME_WIDTH = 640
"""Width of every frame, in pixels."""
FRAME_HEIGHT = 360
"""Height of every frame, in pixels."""
FRAME_DPI = 100
#: One colour per layer (cycled for K > 6) and for the encoder.
_LAYER_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
_ENCODER_COLOUR = "#8c8c8c"


class FrameRenderer:
    """Draws RGB frames of the slots of one core, reusing one matplotlib figure.

    Args:
        core: the batched core whose slots are drawn.
        width: frame width in pixels (fixed for the renderer's life).
        height: frame height in pixels (fixed for the renderer's life).
    """

    def __init__(self, core: DynaLayCore, width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT) -> None:
        if width < 160 or height < 120:
            raise ValueError(f"frame size must be at least 160 x 120 pixels, got {width} x {height}")
        self.core = core
        self.width, self.height = int(width), int(height)
        self._figure: Any = None
        # A fixed compute scale, so frames compare: 1.5 x the full depth, or of max_steps layers if longer.
        self._compute_scale = 1.5 * max(1.0, core.max_steps / core.num_layers)

    def __getstate__(self) -> dict[str, Any]:
        # A pickled env (async vector envs, copies) redraws on a new figure: an unpickled figure
        # loses its Agg canvas.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_ax_")} | {"_figure": None}

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)`` of every frame."""
        return self.height, self.width, 3

    def _setup(self) -> None:
        # Imported here: rendering is optional, and importing matplotlib costs ~0.3 s.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(self.width / FRAME_DPI, self.height / FRAME_DPI), dpi=FRAME_DPI)
        FigureCanvasAgg(fig)
        # Fixed axes positions (figure fractions): no layout engine, so every frame has the same layout.
        self._ax_input = fig.add_axes((0.06, 0.56, 0.50, 0.30))
        self._ax_path = fig.add_axes((0.02, 0.22, 0.56, 0.2))
        self._ax_compute = fig.add_axes((0.06, 0.06, 0.50, 0.06))
        self._ax_probs = fig.add_axes((0.66, 0.08, 0.31, 0.78))
        self._figure = fig

    def frame(self, slot: int = 0) -> np.ndarray:
        """The frame of slot ``slot``: ``uint8 [height, width, 3]``."""
        if not 0 <= slot < self.core.num_envs:
            raise ValueError(f"slot must be in [0, {self.core.num_envs}), got {slot}")
        if self._figure is None:
            self._setup()
        core, fig = self.core, self._figure
        example, label = int(core.example[slot]), int(core.label[slot])
        steps, done = int(core.steps[slot]), bool(core.done[slot])
        probs = torch.softmax(core.logits[slot].float(), dim=0).cpu().numpy()
        prediction = int(probs.argmax())
        path = core.path[slot, :steps].tolist()
        iterations = core.path_iterations[slot, :steps].tolist()
        flops = float(core.flops[slot])

        for text in list(fig.texts):
            text.remove()
        name = core.dataset.name if core.dataset is not None else "examples"
        state = (f"done: predicted {prediction}, {'correct' if prediction == label else 'wrong'}" if done
                 else f"step {steps}/{core.max_steps}, running")
        fig.text(0.02, 0.94, f"{name} / {core.split}  example {example}  label {label}  |  {state}",
                 fontsize=10, weight="bold", va="center")
        self._draw_input(core.x[example].detach().cpu().numpy())
        self._draw_path(path, iterations)
        self._draw_probs(probs, label, prediction)
        self._draw_compute(flops / core.normalizer, flops)
        canvas = fig.canvas
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    # ---- panels ----------------------------------------------------------------------------------

    def _draw_input(self, x: np.ndarray) -> None:
        ax = self._ax_input
        ax.clear()
        ax.set_title("input", fontsize=9, loc="left")
        image = _as_image(x)
        if image is None:
            signal = x.reshape(-1)
            ax.plot(np.arange(signal.size), signal, color="#333333", linewidth=1.2)
            ax.set_xlim(0, max(signal.size - 1, 1))
            ax.tick_params(labelsize=7)
        else:
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])

    def _draw_path(self, path: list[int], iterations: list[int]) -> None:
        ax = self._ax_path
        ax.clear()
        ax.set_axis_off()
        slots = self.core.max_steps + 1
        ax.set_xlim(0, slots)
        ax.set_ylim(0, 1)
        ax.set_title("path (layer: FPI iterations)", fontsize=9, loc="left")
        boxes = [("enc", _ENCODER_COLOUR)] + [(f"L{a}\n{it} it", _LAYER_COLOURS[(a - 1) % len(_LAYER_COLOURS)])
                                             for a, it in zip(path, iterations, strict=True)]
        for i in range(slots):
            text, colour = boxes[i] if i < len(boxes) else ("", "#eeeeee")
            ax.add_patch(_box(i + 0.08, 0.15, 0.84, 0.7, colour))
            if text:
                ax.text(i + 0.5, 0.5, text, ha="center", va="center", fontsize=8, color="white", weight="bold")
            if 0 < i < len(boxes):
                ax.annotate("", xy=(i + 0.08, 0.5), xytext=(i - 0.08, 0.5),
                            arrowprops={"arrowstyle": "->", "color": "#333333"})

    def _draw_probs(self, probs: np.ndarray, label: int, prediction: int) -> None:
        ax = self._ax_probs
        ax.clear()
        classes = np.arange(probs.size)
        colours = ["#55a868" if c == label else "#9db4d0" for c in classes]
        bars = ax.barh(classes, probs, color=colours)
        bars[prediction].set_edgecolor("black")
        bars[prediction].set_linewidth(1.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(probs.size - 0.5, -0.5)
        ax.set_yticks(classes)
        ax.tick_params(labelsize=7)
        ax.set_title("head: class probabilities", fontsize=9, loc="left")

    def _draw_compute(self, compute: float, flops: float) -> None:
        ax = self._ax_compute
        ax.clear()
        top = self._compute_scale
        ax.barh([0], [min(compute, top)], color="#c44e52")
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_xlim(0, top)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.set_title(f"compute {compute:.3f} (1.0 = full depth), {flops / 1e6:.3f} MFLOPs", fontsize=9, loc="left")


def _box(x: float, y: float, w: float, h: float, colour: str) -> Any:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", facecolor=colour, edgecolor="none")


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """``x`` as an image to show (``[H, W]`` grey or ``[H, W, 3]`` in [0, 1]), or None for a signal."""
    if x.ndim == 3 and x.shape[0] in (1, 3):
        image = x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    elif x.ndim == 2 and min(x.shape) > 1:
        image = x
    elif x.ndim == 1 and x.size >= 16 and math.isqrt(x.size) ** 2 == x.size:
        side = math.isqrt(x.size)  # a flattened square picture (digits: 8 x 8)
        image = x.reshape(side, side)
    else:
        return None
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


__all__ = ["FRAME_HEIGHT", "FRAME_WIDTH", "FrameRenderer"]

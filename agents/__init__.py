"""The learners of DynaLay-Gym and how they are judged: the framework-neutral agent interface and
its backends (Stable-Baselines3, the supervised baselines, Ray RLlib), the algorithm registry, the
threshold and oracle baselines, evaluation and its reports, run folders, training, sweeps and
adaptive inference. ``dynalay_env`` never imports this package."""

# First, before any module here loads torch (SB3 does): dynalay_env caps torch's per-shape
# convolution caches through environment variables that torch reads when it is loaded.
import dynalay_env  # noqa: F401

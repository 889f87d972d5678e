"""Everything Stable-Baselines3 for DynaLay-Gym: the SB3 VecEnv adapter, algorithms, baselines,
evaluation, callbacks. ``dynalay_env`` never imports this package."""

# First, before any module here loads torch (SB3 does): dynalay_env caps torch's per-shape
# convolution caches through environment variables that torch reads when it is loaded.
import dynalay_env  # noqa: F401

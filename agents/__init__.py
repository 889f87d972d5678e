"""Everything Stable-Baselines3 for DynaLay-Gym: the SB3 VecEnv adapter, algorithms, baselines,
evaluation, callbacks. ``dynalay_env`` never imports this package."""

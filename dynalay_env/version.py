"""The package's version and the version of the numerics that make a main model (a leaf module:
what reads them imports nothing else of the package)."""

__version__ = "0.2.0"

#: Version of the numerics that make a main model: the FPI layers and solvers (fpi.py), the model
#: and its initialisation (model.py), the pre-training recipe (pretrain.py) and the data it reads.
#: The cached default model is keyed by it (with the model config, the pre-training config and the
#: dataset fingerprint; never by source hashes), and every checkpoint and report records it. Bump it
#: on purpose, in the same commit, whenever a change alters what pre-training produces for the
#: same config and seed; tests/test_identity.py pins the numbers and fails when they move without a
#: bump. Refactors, comments and docs leave it alone, so they never retrain the cached models.
RECIPE_VERSION = 1

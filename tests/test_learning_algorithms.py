"""Whether each SB3 algorithm *learns*: trained on the synthetic dataset, it must beat the random
policy whose compute matches its own (``tests/learning.py`` holds the check and its budget).

A file of its own, so that pytest-xdist (``--dist loadfile``) runs it beside the rest of
``test_algorithms.py`` instead of after it. Algorithms not checked here are named in
``test_algorithms.SMOKE_ONLY``, with the reason.
"""

from __future__ import annotations

import pytest

from tests import learning
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)
from tests.vec_fixtures import one_torch_thread


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny networks and 32 envs: torch's intra-op threads cost more than they give (restored after)."""
    with one_torch_thread():
        yield


@pytest.mark.learning
@pytest.mark.slow  # 15-50 s per algorithm on 2 busy cores, plus the model's 10 s: `make test` runs it
@pytest.mark.parametrize("name", list(learning.LEARN))
def test_algorithm_beats_the_matched_compute_random_policy(name: str) -> None:
    """At the suite's seed; benchmarks/results/learning_margins.md has every seed 0-4 under the default
    kernels and MKL_CBWR=COMPATIBLE, and the threshold holds at each."""
    result = learning.sb3_margin(name, learning.SUITE_SEED)
    assert not learning.failures(name, result.to_json()), (learning.failures(name, result.to_json()),
                                                           result.describe())

"""The reward registry: every documented formula on hand-made inputs, shaping, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynalay_env.env import DynaLayEnv
from dynalay_env.rewards import (
    REWARD_PARAMETERS,
    REWARDS,
    Reward,
    RewardInputs,
    RewardParams,
    get_reward,
    list_rewards,
    make_reward,
    register_reward,
)
from tests.env_fixtures import digits_model, no_default_model_training  # noqa: F401


def inputs(**overrides: object) -> RewardInputs:
    """Four episodes covering the cases: non-terminal step, exit right, exit wrong, forced exit
    after a repeat."""
    base: dict[str, torch.Tensor] = {
        "step_compute": torch.tensor([0.3, 0.0, 0.0, 0.5], dtype=torch.float64),
        "total_compute": torch.tensor([0.4, 0.6, 0.2, 1.5], dtype=torch.float64),
        "repeated": torch.tensor([False, False, False, True]),
        "terminal": torch.tensor([False, True, True, True]),
        "correct": torch.tensor([True, True, False, True]),
        "log_prob_true": torch.tensor([-0.1, -0.2, -2.0, -0.05]),
        "prob_true_before": torch.tensor([0.5, 0.8, 0.1, 0.9]),
        "prob_true_after": torch.tensor([0.9, 0.8, 0.1, 0.95]),
    }
    base.update(overrides)  # type: ignore[arg-type]
    return RewardInputs(**base)


def test_registry_names() -> None:
    assert list_rewards() == ["paper", "blockdrop", "logprob"]
    assert set(REWARDS) == set(list_rewards())


def test_register_get_and_list_a_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's shape (register_reward / get_reward / list_rewards), as for datasets and solvers."""
    monkeypatch.setattr("dynalay_env.rewards.REWARDS", dict(REWARDS))
    monkeypatch.setattr("dynalay_env.rewards.REWARD_PARAMETERS", dict(REWARD_PARAMETERS))

    def exit_bonus(batch: RewardInputs, params: RewardParams) -> torch.Tensor:
        return batch.terminal.double() - params.lambda_compute * batch.step_compute

    register_reward("exit_bonus", exit_bonus, parameters=("lambda_compute",))
    assert get_reward("exit_bonus") is exit_bonus and "exit_bonus" in list_rewards()
    assert make_reward("exit_bonus", lambda_compute=0.5)(inputs()).tolist() == pytest.approx([-0.15, 1.0, 1.0, 0.75])
    with pytest.raises(ValueError, match="reward 'exit_bonus' is already registered"):
        register_reward("exit_bonus", exit_bonus)
    with pytest.raises(ValueError, match=r"unknown reward 'papr' \(did you mean 'paper'\?\); valid rewards: paper, "
                                         r"blockdrop, logprob, exit_bonus \(or a callable\)"):
        get_reward("papr")


def test_defaults() -> None:
    p = RewardParams()
    assert (p.correct_reward, p.wrong_reward, p.lambda_compute, p.mu_redundant) == (1.0, -1.0, 0.1, 0.05)
    assert p.shaping is None


@pytest.mark.parametrize("lam,mu", [(0.1, 0.05), (0.3, 0.0), (0.0, 1.0)])
def test_paper_formula(lam: float, mu: float) -> None:
    inp = inputs()
    r = make_reward("paper", lambda_compute=lam, mu_redundant=mu)(inp)
    assert r.dtype == torch.float32 and r.shape == (4,)
    # r = [terminal] * (+1 if correct else -1) - lambda * step_compute - mu * [repeat]
    expected = [0 - lam * 0.3, 1.0, -1.0, 1.0 - lam * 0.5 - mu]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_paper_custom_correct_and_wrong_values() -> None:
    r = make_reward("paper", correct_reward=2.0, wrong_reward=-0.5, lambda_compute=0.0, mu_redundant=0.0)(inputs())
    np.testing.assert_allclose(r.numpy(), [0.0, 2.0, -0.5, 2.0])


def test_blockdrop_formula() -> None:
    r = make_reward("blockdrop", wrong_reward=-0.7)(inputs())
    # r_T = 1 - c^2 if correct, wrong_reward otherwise; 0 on non-terminal steps.
    np.testing.assert_allclose(r.numpy(), [0.0, 1 - 0.6**2, -0.7, 1 - 1.5**2], rtol=1e-6)


def test_logprob_formula() -> None:
    r = make_reward("logprob", lambda_compute=0.2)(inputs())
    # r = [terminal] * log p(y | s_T) - lambda * step_compute
    np.testing.assert_allclose(r.numpy(), [-0.2 * 0.3, -0.2, -2.0, -0.05 - 0.2 * 0.5], rtol=1e-6)


def test_custom_callable_one_argument() -> None:
    reward = make_reward(lambda inp: -inp.total_compute)
    assert isinstance(reward, Reward)
    np.testing.assert_allclose(reward(inputs()).numpy(), [-0.4, -0.6, -0.2, -1.5], rtol=1e-6)


def test_custom_callable_two_arguments_gets_params() -> None:
    seen: list[RewardParams] = []

    def my_reward(inp: RewardInputs, params: RewardParams) -> torch.Tensor:
        seen.append(params)
        return params.lambda_compute * inp.correct.double()

    reward = make_reward(my_reward, lambda_compute=0.25)
    assert reward.name == "my_reward"
    np.testing.assert_allclose(reward(inputs()).numpy(), [0.25, 0.25, 0.0, 0.25])
    assert seen and seen[0].lambda_compute == 0.25


def test_reward_object_passes_through() -> None:
    reward = make_reward("paper", lambda_compute=0.2)
    assert make_reward(reward) is reward
    with pytest.raises(ValueError, match="either"):
        make_reward(reward, lambda_compute=0.3)


def test_describe() -> None:
    d = make_reward("blockdrop", wrong_reward=-2.0).describe()
    assert d["name"] == "blockdrop" and d["wrong_reward"] == -2.0 and d["lambda_compute"] == 0.1


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_shaping_term(gamma: float) -> None:
    inp = inputs()
    base = make_reward("paper")(inp)
    shaped = make_reward("paper", shaping="confidence", shaping_gamma=gamma)(inp)
    # F = gamma * Phi(s') - Phi(s), Phi = p(y|s), Phi = 0 at terminal states.
    phi_after = np.array([0.9, 0.0, 0.0, 0.0])
    phi_before = np.array([0.5, 0.8, 0.1, 0.9])
    np.testing.assert_allclose((shaped - base).numpy(), gamma * phi_after - phi_before, rtol=1e-6, atol=1e-7)


def test_shaping_adds_to_custom_callable() -> None:
    r = make_reward(lambda inp: torch.zeros_like(inp.step_compute), shaping="confidence", shaping_gamma=1.0)(inputs())
    np.testing.assert_allclose(r.numpy(), [0.9 - 0.5, -0.8, -0.1, -0.9], rtol=1e-6)


def test_shaping_telescopes_along_episodes() -> None:
    """With shaping_gamma=1 and a zero base reward, an episode's rewards sum to -Phi(s0) = -p(y|s0)."""
    model = digits_model()
    env = DynaLayEnv(dataset="digits", model=model, reward=lambda inp: torch.zeros_like(inp.step_compute),
                     shaping="confidence", shaping_gamma=1.0, max_steps=3)
    x, y = env.core.x, env.core.y
    rng = np.random.default_rng(0)
    for episode in range(12):
        actions = rng.integers(0, env.action_space.n, size=5).tolist() if episode else [0]
        _, info = env.reset(seed=episode)
        total, terminated = 0.0, False
        for a in actions:
            _, r, terminated, _, info = env.step(int(a))
            total += r
            if terminated:
                break
        assert terminated
        i = info["example"]
        with torch.no_grad():
            p0 = torch.softmax(model.classify(model.encode(x[i:i + 1])), 1)[0, int(y[i])].item()
        assert math.isclose(total, -p0, rel_tol=1e-5, abs_tol=1e-6), (episode, info["path"], total, -p0)


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_reward_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown reward 'nope'") as exc:
        make_reward("nope")
    for name in ("paper", "blockdrop", "logprob"):
        assert name in str(exc.value)


def test_unknown_param_lists_valid_params() -> None:
    with pytest.raises(ValueError, match="lambda_comput") as exc:
        make_reward("paper", lambda_comput=0.2)
    for name in RewardParams.__dataclass_fields__:
        assert name in str(exc.value)


def test_gamma_gets_its_own_message() -> None:
    with pytest.raises(ValueError, match="gamma") as exc:
        make_reward("paper", gamma=0.5)
    assert "wrong_reward" in str(exc.value) and "shaping_gamma" in str(exc.value)


@pytest.mark.parametrize("params", [{"lambda_compute": -0.1}, {"mu_redundant": -1.0}])
def test_negative_prices_rejected(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        make_reward("paper", **params)


@pytest.mark.parametrize("params,match", [({"shaping": "potential"}, "unknown shaping 'potential'.*confidence"),
                                          ({"shaping_gamma": 1.5}, r"shaping_gamma must be in \[0, 1\]")])
def test_bad_shaping_rejected(params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_reward("paper", **params)


@pytest.mark.parametrize("bad", [lambda inp: torch.zeros(3), lambda inp: torch.tensor(0.0),
                                 lambda inp: torch.zeros(4, 1)])
def test_callable_with_wrong_shape_rejected(bad: object) -> None:
    reward = make_reward(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"returned shape .*expected \(4,\)"):
        reward(inputs())


def test_non_callable_rejected() -> None:
    with pytest.raises(ValueError, match="name .* or a callable"):
        make_reward(3)  # type: ignore[arg-type]


def test_wrong_shape_reward_rejected_in_env() -> None:
    env = DynaLayEnv(dataset="digits", model=digits_model(), reward=lambda inp: torch.zeros(2))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected"):
        env.step(0)


def test_callable_with_optional_keyword_is_a_one_argument_reward() -> None:
    def scaled(inp: RewardInputs, scale: float = 2.0) -> torch.Tensor:
        return scale * inp.step_compute

    np.testing.assert_allclose(make_reward(scaled)(inputs()).numpy(), [0.6, 0.0, 0.0, 1.0], rtol=1e-6)

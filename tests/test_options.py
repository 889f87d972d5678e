"""EnvOptions: every env option once, validated once; the env's docstring table is generated from it."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import dynalay_env.options as options_module
from dynalay_env.env import DynaLayEnv, make_core
from dynalay_env.options import REWARD_PARAM_NAMES, EnvOptions
from dynalay_env.rewards import RewardParams
from tests.env_fixtures import digits_model

PACKAGE = Path(options_module.__file__).parent


def test_docstring_arguments_table_is_the_generated_one() -> None:
    """The Arguments table of ``DynaLayEnv`` is ``EnvOptions.option_table()`` (regenerate it with
    ``python -m dynalay_env.options``) and names every option once."""
    doc = inspect.cleandoc(DynaLayEnv.__doc__ or "")
    table = EnvOptions.option_table()
    assert table in doc
    names = re.findall(r"^\| ``(\w+)`` \|", table, flags=re.M)
    assert names == [f.name for f in dataclasses.fields(EnvOptions)]


def test_every_field_has_a_doc_and_the_reward_defaults_are_rewardparams() -> None:
    for f in dataclasses.fields(EnvOptions):
        assert f.metadata["doc"], f.name
    assert {name: getattr(EnvOptions(), name) for name in REWARD_PARAM_NAMES} == dataclasses.asdict(RewardParams())


def test_defaults_are_written_once_in_the_package() -> None:
    """``max_steps=4`` and ``lambda_compute=0.1`` appear as defaults once each in ``dynalay_env``."""
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    for name, value in (("max_steps", "4"), ("lambda_compute", "0.1")):
        written = re.findall(rf"\b{name}(?:: \w+)?\s*=\s*(?:_option\()?{re.escape(value)}\b", sources)
        assert len(written) == 1, (name, written)


def test_unknown_keyword_uses_pythons_wording_and_lists_the_options() -> None:
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'frameskip'") as exc:
        EnvOptions.from_kwargs({"frameskip": 1})
    for name in EnvOptions.names():
        assert name in str(exc.value)
    with pytest.raises(TypeError, match=r"EnvOptions.replace\(\) got an unexpected keyword argument 'maxsteps'"):
        EnvOptions().replace(maxsteps=3)


def test_reward_kwargs_fold_into_the_fields_and_top_level_wins() -> None:
    opts = EnvOptions.from_kwargs({"reward_kwargs": {"lambda_compute": 0.3, "mu_redundant": 0.2},
                                   "lambda_compute": 0.5})
    assert (opts.lambda_compute, opts.mu_redundant) == (0.5, 0.2)
    assert opts.reward_params() == RewardParams(lambda_compute=0.5, mu_redundant=0.2)
    with pytest.raises(ValueError, match="'gamma' is ambiguous"):
        EnvOptions.from_kwargs({"reward_kwargs": {"gamma": 0.9}})


@pytest.mark.parametrize(("changes", "match"), [
    ({"split": "train"}, "unknown split 'train'; valid: 'model_train', 'agent_train', 'val', 'test'"),
    ({"sample_mode": "shuffled"}, "unknown sample_mode 'shuffled'"),
    ({"max_steps": 0}, "max_steps must be an integer >= 1"),
    ({"max_steps": 2.5}, "max_steps must be an integer >= 1"),
    ({"observation_groups": ("hidden", "vision")}, "unknown observation group 'vision'"),
    ({"observation_groups": ()}, "observation_groups is empty"),
    ({"compute_budget": 0.0}, "compute_budget must be > 0"),
    ({"decision_flops": -1.0}, "decision_flops must be a finite number >= 0"),
    ({"device": "mps"}, "unsupported device 'mps'"),
    ({"mode": "online"}, "unknown mode 'online'"),
    ({"cotrain_lr": 1e-3}, "cotrain_lr only applies to mode='cotrain'"),
    ({"mode": "cotrain", "cotrain_every": 0}, "cotrain_every must be an integer >= 1"),
    ({"reward": "nope"}, "unknown reward 'nope'; valid rewards: paper"),
    ({"lambda_compute": -0.1}, "lambda_compute and mu_redundant must be >= 0"),
    ({"shaping": "potential"}, "unknown shaping 'potential'"),
])
def test_bad_values_raise_once_with_the_valid_choices(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        EnvOptions().replace(**changes)


def test_observation_groups_are_put_in_observation_order() -> None:
    assert EnvOptions(observation_groups=["solver", "hidden"]).observation_groups == ("hidden", "solver")


def test_as_kwargs_round_trips_and_lists_what_differs() -> None:
    opts = EnvOptions(max_steps=3, mask_repeats=True, lambda_compute=0.2)
    assert opts.as_kwargs(non_default=True) == {"max_steps": 3, "mask_repeats": True, "lambda_compute": 0.2}
    assert EnvOptions.from_kwargs(opts.as_kwargs()) == opts
    assert EnvOptions().as_kwargs(non_default=True) == {}


def test_parse_cli_reads_each_option_by_its_type() -> None:
    parsed = EnvOptions.parse_cli(["max_steps=3", "mask_repeats=true", "compute_budget=none", "lambda_compute=0.25",
                                   "observation_groups=head,progress", "split=val", "shaping=null",
                                   'reward_kwargs={"mu_redundant": 0.1}'])
    assert parsed == {"max_steps": 3, "mask_repeats": True, "compute_budget": None, "lambda_compute": 0.25,
                      "observation_groups": ("head", "progress"), "split": "val", "shaping": None,
                      "reward_kwargs": {"mu_redundant": 0.1}}
    EnvOptions.from_kwargs(parsed)  # valid as a whole
    with pytest.raises(ValueError, match="max_steps: expected an integer, got 'three'"):
        EnvOptions.parse_cli(["max_steps=three"])
    with pytest.raises(ValueError, match="mask_repeats: expected true or false"):
        EnvOptions.parse_cli(["mask_repeats=maybe"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'maxsteps'"):
        EnvOptions.parse_cli(["maxsteps=3"])


def test_make_core_takes_options_or_keywords_alike() -> None:
    model = digits_model()
    opts = EnvOptions(dataset="digits", model=model, max_steps=3, mask_repeats=True, lambda_compute=0.2)
    by_options = make_core(2, opts)
    by_keywords = make_core(2, dataset="digits", model=model, max_steps=3, mask_repeats=True, lambda_compute=0.2)
    assert by_options.options == by_keywords.options == opts
    assert by_keywords.reward.params.lambda_compute == 0.2 and by_keywords.max_steps == 3
    by_options.seed([0, 1])
    by_keywords.seed([0, 1])
    assert np.array_equal(by_options.reset().numpy(), by_keywords.reset().numpy())
    changed = make_core(1, opts, max_steps=2)
    assert changed.max_steps == 2 and changed.options.lambda_compute == 0.2


def test_set_option_keeps_the_core_options_in_step() -> None:
    core = make_core(1, dataset="digits", model=digits_model(), lambda_compute=0.2)
    core.set_option("decision_flops", 100.0)
    core.set_option("mask_repeats", True)
    assert (core.options.decision_flops, core.options.mask_repeats) == (100.0, True)
    core.set_option("reward", "logprob")
    assert core.options.reward == "logprob" and core.reward.params == RewardParams()
    with pytest.raises(ValueError, match="cannot change on a live env"):
        core.set_option("max_steps", 3)


def test_env_faces_take_an_options_object() -> None:
    env = DynaLayEnv(options=EnvOptions(dataset="digits", model=digits_model(), max_steps=2))
    assert env.unwrapped.core.max_steps == 2


def test_options_must_be_an_envoptions() -> None:
    with pytest.raises(TypeError, match="options must be an EnvOptions"):
        make_core(1, {"max_steps": 2})  # type: ignore[arg-type]

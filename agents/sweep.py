"""Reward-shaping study: a multi-objective Optuna sweep over the reward, scaled out on Optuna's storage.

Each trial draws a reward -- its kind and the parameters that kind reads
(:data:`dynalay_env.rewards.REWARD_PARAMETERS`), optionally the algorithm and its learning rate --
or, for a learned non-RL baseline (:data:`agents.supervised.LEARNERS`: ``value_exit``, ``bc``,
``dagger``), no reward but its own ``lambda_compute`` (from the same range) and, for ``value_exit``
when ``exit_threshold`` gives a range, its exit threshold (else chosen on val) --
trains an agent on ``agent_train`` with :func:`agents.training.train`, and scores it on ``val`` with
:func:`agents.evaluate.run_policy`. Objectives: **maximise val accuracy, minimise val mean normalised
compute** (1.0 = the full-depth model; decisions counted: each policy is charged its measured FLOPs
per decision, each threshold rule its statistic, so fronts and hypervolumes compare like with like;
``test_mean_env_compute`` is the main model alone). When the study is complete the Pareto-optimal trials are
re-evaluated on ``test`` against the baseline curves (:func:`agents.evaluate.baseline_curves`: fixed
paths, random exits, the exact threshold curves over every distinct threshold, the path oracle and
the prefix oracle), and the hypervolume of the agent front and of the confidence-threshold front are
computed against one reference point. ``sweep.json`` holds all of it; ``sweep.md`` is its table and ``sweep.png`` its figure.

**No pruning.** Optuna does not prune multi-objective studies (``Trial.report`` and ``should_prune``
raise), and a trial is one short training run, so trials run to the end. The only trials ended early
are *surplus* trials (next paragraph), ended at once with ``TrialPruned`` and user attribute
``surplus``; they ran nothing.

**Storage and workers.** The default storage is SQLite in the run folder (``study.db``), shared by
``workers`` processes on one machine. ``storage`` (an RDB URL, e.g. PostgreSQL) lets workers on many
machines join the study by its name; every worker checks that it runs the same study (search space,
env, budget, main model) and refuses otherwise. ``n_trials`` is the study's total of *completed*
trials, whoever runs them. A trial counts toward it while it is waiting, running or complete: a worker
stops drawing trials when that count reaches ``n_trials`` (:class:`optuna.study.MaxTrialsCallback`), and
two workers that draw at the same instant are told apart by trial number -- a trial with ``n_trials``
counted trials below it is surplus. A worker whose remaining trials all run elsewhere waits, so that it
can take one over if its worker dies. Workers beat a heartbeat into the storage
(``heartbeat_interval``); a trial whose heartbeat stops for ``grace_period`` seconds is failed by the
next worker that looks and re-queued with the same parameters
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, Optuna's new name for
``RetryFailedTrialCallback``; at most ``max_retry`` times). A retry, or the retry of a trial stopped by
Ctrl-C, resumes the original trial's training run from its last checkpoint when its run folder is on
this machine. Re-running the same command resumes the study; a larger ``n_trials`` extends it.

**Secrets.** The storage's password never leaves memory: messages and reports show the storage by
:func:`masked_url`, ``sweep_config.json`` keeps :func:`public_url` (the URL without its password),
and Optuna's attributes do not hold it at all, so a resumed or joined worker takes the password from
where the first one did. Give it as
PostgreSQL's drivers read it when the URL has none -- ``PGPASSWORD``, ``~/.pgpass`` or a ``PGSERVICE``
service file -- or give the whole URL in ``DYNALAY_STORAGE`` (:data:`STORAGE_ENV`), which the command
line reads when ``--storage`` is absent. A URL with a password still works; the command warns once
(:func:`password_warning`), since a command line is readable by every user of the machine.

Run folder::

    run_dir/
      sweep_config.json     this machine's SweepConfig
      study.db              the default storage (SQLite)
      artifacts/            every completed trial's agent.zip (Optuna artifact store; pass a shared
                            folder as artifact_dir when workers run on several machines)
      trials/<study>/trial_0007/   each trial's training run folder (agents.training layout)
      sweep.json, sweep.md, sweep.png
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.algorithms import get_algorithm
from agents.curves import vs_curve
from agents.evaluate import baseline_curves, cost_of, run_policy
from agents.plots import plot_sweep
from agents.reports import render_sweep
from agents.runs import (
    AGENT_NAME,
    CONFIG_NAME,
    MODEL_NAME,
    TrainConfig,
    check_env_kwargs,
    config_from_dict,
    evaluation_kwargs,
    resolved_model_options,
    take_flag_options,
    val_evaluator,
)
from agents.supervised import LEARNERS
from agents.training import train
from dynalay_env import ENV_IDS
from dynalay_env import cache as model_cache
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.datasets import load_dataset
from dynalay_env.env import make_core
from dynalay_env.model import load_checkpoint, provenance_of
from dynalay_env.options import EnvOptions
from dynalay_env.rewards import REWARD_PARAMETERS

OBJECTIVE_NAMES: tuple[str, str] = ("val_accuracy", "val_mean_compute")
DIRECTIONS: tuple[str, str] = ("maximize", "minimize")
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")
STUDY_DB = "study.db"
REPORT_NAME = "sweep.json"
SWEEP_CONFIG_NAME = "sweep_config.json"
#: Environment variable holding the whole storage URL, read by the command line when ``--storage`` is absent.
STORAGE_ENV = "DYNALAY_STORAGE"
#: Where a storage password belongs instead of the URL (named by warnings, ``--help`` and the docs).
SAFER_WAYS = (f"put the password in PGPASSWORD, ~/.pgpass or a PGSERVICE service file, or the whole URL in "
              f"{STORAGE_ENV}")
#: URL query keys that carry a password to the driver (libpq's ``password``, MySQL drivers' ``passwd``).
PASSWORD_QUERY_KEYS: tuple[str, ...] = ("password", "passwd")
#: Keys of SweepConfig that may differ between the workers of one study (machine-local choices).
#: ``model`` is a path, which differs between machines; the model itself is checked by its provenance.
LOCAL_KEYS: frozenset[str] = frozenset({"run_dir", "storage", "artifact_dir", "model", "workers", "threads", "device",
                                        "n_trials", "heartbeat_interval", "grace_period", "max_retry",
                                        "hv_reference", "eval_slots", "n_boot", "data_root"})
SEARCHED_REWARD_PARAMS: tuple[str, ...] = ("lambda_compute", "mu_redundant", "correct_reward", "wrong_reward")


# --------------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRange:
    """A float parameter's range: ``low < high`` (uniform, or log-uniform with ``log``), or one
    fixed value (``low == high``, written as a single number)."""

    low: float
    high: float
    log: bool = False

    @property
    def fixed(self) -> bool:
        """True when the range is one value (``low == high``): nothing is searched."""
        return self.low == self.high

    @classmethod
    def parse(cls, name: str, value: Any) -> SearchRange:
        """From ``"LOW,HIGH"``, ``"LOW,HIGH,log"``, one number (fixed), a list of those parts, or a
        SearchRange. Empty, inverted or non-numeric ranges raise ``ValueError`` naming ``name``."""
        if isinstance(value, SearchRange):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts: list[Any] = [value]
        elif isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise ValueError(f"{name}: expected LOW,HIGH or LOW,HIGH,log or one value, got {value!r}")
        log = len(parts) == 3 and str(parts[2]).lower() == "log"
        if len(parts) == 3 and not log:
            raise ValueError(f"{name}: the third part of a range must be 'log', got {parts[2]!r}")
        numbers = parts[:2] if log else parts
        if len(numbers) not in (1, 2) or any(str(p).strip() == "" for p in numbers):
            raise ValueError(f"{name}: empty range {value!r}; expected LOW,HIGH (e.g. 0.01,1), LOW,HIGH,log or one "
                             f"value to fix the parameter")
        try:
            low, high = (float(numbers[0]), float(numbers[-1]))
        except (TypeError, ValueError):
            raise ValueError(f"{name}: range bounds must be numbers, got {value!r}") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name}: range bounds must be finite, got {value!r}")
        if len(numbers) == 2 and low == high:
            raise ValueError(f"{name}: empty range [{low}, {high}]; give LOW < HIGH, or one value to fix it")
        if low > high:
            raise ValueError(f"{name}: inverted range [{low}, {high}]; give LOW < HIGH")
        if log and low <= 0:
            raise ValueError(f"{name}: a log range needs LOW > 0, got [{low}, {high}]")
        return cls(low, high, log)

    def to_json(self) -> float | list[Any]:
        """What :meth:`parse` reads back: one number when fixed, else ``[low, high(, "log")]``."""
        if self.fixed:
            return self.low
        return [self.low, self.high] + (["log"] if self.log else [])

    def suggest(self, trial: Any, name: str) -> float:
        """The value for ``trial``: the fixed value, or Optuna's draw in ``[low, high]`` (log-uniform if ``log``)."""
        if self.fixed:
            return self.low
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))


# Parameters that must stay >= 0 (RewardParams checks them too, but only once a trial has started).
_NON_NEGATIVE = ("lambda_compute", "mu_redundant")


@dataclass
class SweepConfig:
    """A reward-shaping study. Ranges take :meth:`SearchRange.parse` syntax; ``reward_kinds`` and
    ``algos`` with one entry are fixed, with several a categorical choice per trial; ``learning_rate``
    ``None`` keeps the algorithm's hyperparameter file (``hyperparams_file``, default
    ``agents/hyperparams/<algo>.yml``). ``timesteps``: agent env steps per trial.
    ``heartbeat_interval`` / ``grace_period``: seconds (grace defaults to 3 heartbeats).
    ``storage``: an RDB URL (``None``: SQLite in the run folder); a password in it is used to connect
    but is left out of :meth:`to_dict` and of the repr."""

    study_name: str = "reward-shaping"
    run_dir: str = "runs/sweep"
    storage: str | None = field(default=None, repr=False)
    artifact_dir: str | None = None
    env_id: str = "DynaLay-MNIST1D-v0"
    dataset: str | None = None
    data_root: str | None = None
    model: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 16
    workers: int = 1
    timesteps: int = 100_000
    n_envs: int | None = None
    seed: int = 0
    device: str = EnvOptions.default("device")
    threads: int = 1
    reward_kinds: tuple[str, ...] = ("paper", "logprob", "blockdrop")
    lambda_compute: Any = (0.01, 1.0, "log")
    mu_redundant: Any = (0.0, 0.2)
    correct_reward: Any = (0.5, 1.5)
    wrong_reward: Any = (-1.5, 0.0)
    algos: tuple[str, ...] = ("ppo",)
    learning_rate: Any = None
    exit_threshold: Any = None   # value_exit's threshold range; None: chosen on val by lambda_compute
    hyperparams_file: str | None = None
    sampler: str = "tpe"
    heartbeat_interval: int = 10
    grace_period: int | None = None
    max_retry: int = 2
    hv_reference: tuple[float, float] | None = None
    eval_slots: int = 512
    n_boot: int = 1000

    # ---- validation ------------------------------------------------------------------------------

    def validate(self) -> SweepConfig:
        """Normalise the fields and raise ``ValueError`` naming any bad one. Returns ``self``."""
        self.reward_kinds = tuple(_as_names(self.reward_kinds, "reward_kinds"))
        for kind in self.reward_kinds:
            if kind not in REWARD_PARAMETERS:
                raise ValueError(f"unknown reward kind {kind!r}; valid kinds: {', '.join(REWARD_PARAMETERS)}")
        if len(set(self.reward_kinds)) != len(self.reward_kinds):
            raise ValueError(f"reward_kinds lists a kind twice: {list(self.reward_kinds)}")
        self.algos = tuple(get_algorithm(a).name for a in _as_names(self.algos, "algos"))
        for name in SEARCHED_REWARD_PARAMS:
            value = SearchRange.parse(name, getattr(self, name))
            if name in _NON_NEGATIVE and value.low < 0:
                raise ValueError(f"{name}: must be >= 0, got the range [{value.low}, {value.high}]")
            setattr(self, name, value)
        if self.learning_rate is not None:
            lr = SearchRange.parse("learning_rate", self.learning_rate)
            if lr.low <= 0:
                raise ValueError(f"learning_rate: must be > 0, got [{lr.low}, {lr.high}]")
            self.learning_rate = lr
        if self.exit_threshold is not None:
            self.exit_threshold = SearchRange.parse("exit_threshold", self.exit_threshold)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
        for name, minimum in (("n_trials", 1), ("workers", 1), ("timesteps", 1), ("threads", 1),
                              ("heartbeat_interval", 1), ("max_retry", 0), ("eval_slots", 1), ("n_boot", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.grace_period is None:
            self.grace_period = 3 * self.heartbeat_interval
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period} s) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval} s), or live trials would be failed as stale")
        if self.env_id not in ENV_IDS:
            raise ValueError(f"unknown env id {self.env_id!r}; valid ids: {', '.join(ENV_IDS)}")

        take_flag_options(self)  # model, dataset, data_root and device: their own fields, given once
        clash = sorted(set(self.env_kwargs) & {"reward", "reward_kwargs", "split", "sample_mode",
                                               *SEARCHED_REWARD_PARAMS})
        if clash:
            raise ValueError(f"env_kwargs may not set {clash}: the sweep sets them per trial (use the range "
                             f"options, e.g. --lambda-compute 0.1 to fix a parameter)")
        check_env_kwargs(self.env_kwargs)
        if self.hv_reference is not None:
            ref = tuple(float(v) for v in self.hv_reference)
            if len(ref) != 2:
                raise ValueError(f"hv_reference must be (accuracy, compute), got {self.hv_reference!r}")
            self.hv_reference = ref  # type: ignore[assignment]
        if not self.study_name:
            raise ValueError("study_name must not be empty")
        return self

    def dataset_name(self) -> str:
        """The dataset the sweep trains on: ``dataset``, else the env id's, else ``env_kwargs`` or the env's default."""
        return self.dataset or ENV_IDS[self.env_id] or self.env_kwargs.get("dataset", EnvOptions.default("dataset"))

    def storage_url(self) -> str:
        """The Optuna storage URL: ``storage``, else the run folder's SQLite file."""
        return self.storage or f"sqlite:///{(Path(self.run_dir) / STUDY_DB).resolve()}"

    def artifact_path(self) -> Path:
        """Where trials' agents are stored: ``artifact_dir``, else ``<run_dir>/artifacts``."""
        return Path(self.artifact_dir) if self.artifact_dir else Path(self.run_dir) / "artifacts"

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (ranges in their JSON form), with ``storage`` :func:`public_url`
        (no password): what the study stores."""
        out = asdict(self)
        if self.storage is not None:
            out["storage"] = public_url(self.storage)
        for name in (*SEARCHED_REWARD_PARAMS, "learning_rate", "exit_threshold"):
            value = getattr(self, name)
            out[name] = value.to_json() if isinstance(value, SearchRange) else value
        return json.loads(json.dumps(out))  # tuples -> lists: what the storage gives back

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """The config a :meth:`to_dict` dict describes; unknown keys raise ``ValueError``."""
        return config_from_dict(cls, d, "sweep")

    def identity(self) -> dict[str, Any]:
        """What every worker of one study must agree on (a hyperparameter file by its content: its
        path may differ between machines)."""
        out = {k: v for k, v in self.to_dict().items() if k not in LOCAL_KEYS}
        if self.hyperparams_file:
            path = Path(self.hyperparams_file)
            if not path.is_file():
                raise ValueError(f"hyperparams_file {path} not found")
            out["hyperparams_file"] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return out


def _as_names(value: Any, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{what} must name at least one choice")
    return names


@dataclass(frozen=True)
class TrialChoice:
    """What one trial trains: algorithm, reward kind (``none`` for a learned non-RL baseline, which
    reads no reward), the reward's parameters, hyperparameters."""

    algo: str
    reward: str
    reward_params: dict[str, float]
    hyperparams: dict[str, float]


def suggest(trial: Any, config: SweepConfig) -> TrialChoice:
    """Draw a trial's choice. Only the parameters the drawn reward reads are searched (a conditional
    space), so e.g. ``mu_redundant`` is not a dimension of ``logprob`` trials."""
    algo = config.algos[0] if len(config.algos) == 1 else trial.suggest_categorical("algo", list(config.algos))
    if algo in LEARNERS:  # no reward: their search space is their own lambda (and value_exit's threshold)
        hyper = {"lambda_compute": config.lambda_compute.suggest(trial, "lambda_compute")}
        if algo == "value_exit" and config.exit_threshold is not None:
            hyper["threshold"] = config.exit_threshold.suggest(trial, "exit_threshold")
        return TrialChoice(algo, "none", {}, hyper)
    kind = (config.reward_kinds[0] if len(config.reward_kinds) == 1
            else trial.suggest_categorical("reward", list(config.reward_kinds)))
    params = {name: getattr(config, name).suggest(trial, name) for name in REWARD_PARAMETERS[kind]}
    hyper = {} if config.learning_rate is None else {"learning_rate": config.learning_rate.suggest(trial, "learning_rate")}
    return TrialChoice(algo, kind, params, hyper)


# --------------------------------------------------------------------------------------------------
# Storage and study
# --------------------------------------------------------------------------------------------------


def _parse_url(url: str) -> Any:
    """SQLAlchemy's ``URL`` of ``url``, or ``None`` when it does not parse."""
    from sqlalchemy.engine import make_url  # optional dependency: the sweep extra

    try:
        return make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, or ValueError for e.g. a non-numeric port
        return None


def _mask_unparsed(url: str) -> str:
    """A URL SQLAlchemy cannot parse, with anything that may be a password replaced by ``***``."""
    url = re.sub(r"^([^:/?#]+://[^:/?#@]*:).*@", r"\1***@", url)  # user:PASSWORD@ (up to the last @)
    return re.sub(rf"(?i)\b({'|'.join(PASSWORD_QUERY_KEYS)})=[^&]*", r"\1=***", url)


def masked_url(url: str) -> str:
    """The storage URL as messages and reports show it: a password (in the URL or its query string)
    as ``***``, so that a reader sees one was given."""
    parsed = _parse_url(url)
    if parsed is None:
        return _mask_unparsed(url)
    hidden = {k: "***" for k in parsed.query if k.lower() in PASSWORD_QUERY_KEYS}
    rendered = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return rendered.replace("=%2A%2A%2A", "=***")  # the query's mask as the password's (not percent-encoded)


def public_url(url: str) -> str:
    """The storage URL without its password (in the URL or its query string): what is written to
    files, and what a worker connects with when the password comes from the environment."""
    parsed = _parse_url(url)
    if parsed is None:
        return _mask_unparsed(url)
    # URL.set(password=None) keeps the password (None means "unchanged" there): rebuild the tuple.
    stripped = parsed._replace(password=None).difference_update_query(
        [k for k in parsed.query if k.lower() in PASSWORD_QUERY_KEYS])
    return stripped.render_as_string(hide_password=False)


def url_has_password(url: str) -> bool:
    """Whether ``url`` carries a password (``user:PASSWORD@`` or a ``password=`` query parameter)."""
    parsed = _parse_url(url)
    if parsed is None:
        return _mask_unparsed(url) != url
    return bool(parsed.password) or any(k.lower() in PASSWORD_QUERY_KEYS for k in parsed.query)


def password_warning(url: str) -> str | None:
    """The one-line warning for a storage URL with a password given as an option (``--storage`` or a
    ``--config`` file); ``None`` when it has none. It says why (the process list shows a command line
    to every user of the machine; shell history and files keep it) and names the safer ways. The
    password itself is never in it."""
    if not url_has_password(url):
        return None
    return (f"warning: the storage URL {masked_url(url)} carries a password, which the process list shows to "
            f"every user of this machine and which shell history and files keep; use {public_url(url)} and "
            f"{SAFER_WAYS}")


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the password of ``url`` replaced by ``***``."""
    parsed = _parse_url(url)
    if parsed is None:
        return _mask_unparsed(text)
    secrets = [parsed.password]
    for key, value in parsed.query.items():  # a value is a tuple when the key is repeated
        if key.lower() in PASSWORD_QUERY_KEYS:
            secrets += [value] if isinstance(value, str) else list(value)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _default_driver(url: str) -> str:
    """``url``, with ``postgresql://`` pointed at psycopg2 when SQLAlchemy's default PostgreSQL
    driver (psycopg 3 since SQLAlchemy 2.1) is not installed but psycopg2 (the ``sweep`` extra) is."""
    parsed = _parse_url(url)
    if parsed is None or parsed.drivername != "postgresql":
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def quiet_optuna() -> None:
    """Optuna at WARNING level, without the ExperimentalWarning its heartbeat, retry and metric-name
    features raise on every use (they are stable enough here, and tested)."""
    import optuna  # optional dependency: the sweep extra

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(config: SweepConfig) -> Any:
    """The study's :class:`optuna.storages.RDBStorage` with heartbeats and stale-trial retries.
    An unreachable or malformed URL, or a missing database driver, raises ``ValueError``."""
    url = config.storage_url()
    if url.startswith("sqlite"):
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    try:
        return _rdb_storage(url, config)
    except ModuleNotFoundError as exc:
        raise ValueError(f"the storage {masked_url(url)} needs the database driver {exc.name!r}, which is not "
                         f"installed: pip install -e '.[sweep]' (psycopg2-binary for PostgreSQL)") from exc
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; all mean "cannot use this URL"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f" (the URL has no password: {SAFER_WAYS})" if "no password supplied" in reason else "")
        raise ValueError(f"cannot open the study storage {masked_url(url)}: {type(exc).__name__}: "
                         f"{_scrub(reason, url)}{hint}") from None


def _rdb_storage(url: str, config: SweepConfig, attempts: int = 5) -> Any:
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback  # optional dependency: the sweep extra
    from sqlalchemy.exc import IntegrityError, ProgrammingError  # optional dependency: the sweep extra

    # Several worker processes write one SQLite file: wait for its lock instead of failing.
    engine_kwargs: dict[str, Any] = ({"connect_args": {"timeout": 120}} if url.startswith("sqlite")
                                     else {"pool_pre_ping": True})
    for attempt in range(attempts):
        try:
            return RDBStorage(_default_driver(url), engine_kwargs=engine_kwargs, heartbeat_interval=config.heartbeat_interval,
                              grace_period=config.grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=config.max_retry))
        except (IntegrityError, ProgrammingError):
            # Workers that start together on an empty database race to create Optuna's tables
            # (PostgreSQL: duplicate key in pg_type); the loser finds them made when it tries again.
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_sampler(config: SweepConfig, seed: int) -> Any:
    """The Optuna sampler ``config.sampler`` names (TPE with a constant liar by default), seeded with ``seed``."""
    import optuna  # optional dependency: the sweep extra

    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, config.n_trials // 3)), seed=seed)
    # constant_liar: a running trial counts as a poor result, so parallel workers spread out instead
    # of drawing the same point; few random start-up trials, since a study is only tens of trials.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, config.n_trials // 3)),
                                      multivariate=True, group=True, constant_liar=True)


def open_study(config: SweepConfig, storage: Any, model_provenance: str, sampler_seed: int | None = None) -> Any:
    """Create or join the study ``config.study_name``; refuses to join a study defined differently."""
    import optuna  # optional dependency: the sweep extra

    sampler = make_sampler(config, config.seed if sampler_seed is None else sampler_seed)
    study = optuna.create_study(study_name=config.study_name, storage=storage, sampler=sampler,
                                directions=list(DIRECTIONS), load_if_exists=True)
    found = [d.name.lower() for d in study.directions]
    if found != list(DIRECTIONS):
        raise ValueError(f"study {config.study_name!r} in {masked_url(config.storage_url())} has directions {found}, "
                         f"not a reward-shaping study {list(DIRECTIONS)}; choose another --study-name")
    if study.metric_names is None:
        study.set_metric_names(list(OBJECTIVE_NAMES))
    identity = config.identity()
    saved = study.user_attrs.get("sweep_config")
    if saved is None:
        study.set_user_attr("sweep_config", identity)
        study.set_user_attr("main_model_provenance", model_provenance)
    else:
        differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        if differ:
            detail = "; ".join(f"{k}: study has {saved.get(k)!r}, this command {identity.get(k)!r}" for k in differ)
            raise ValueError(f"study {config.study_name!r} was started with other settings ({detail}); use the "
                             f"same options to resume or join it, or a new --study-name")
        theirs = study.user_attrs.get("main_model_provenance")
        if theirs != model_provenance:
            raise ValueError(f"study {config.study_name!r} runs on main model {theirs}, but this worker has "
                             f"{model_provenance}; pass the same --model on every machine")
    return study


def _trial_states() -> tuple[Any, Any, Any]:
    from optuna.trial import TrialState  # optional dependency: the sweep extra

    return TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING


def trial_counts(study: Any) -> dict[str, int]:
    """Trials by state; ``counted`` = waiting + running + complete (what ``n_trials`` bounds)."""
    from optuna.trial import TrialState  # optional dependency: the sweep extra

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    counts["surplus"] = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    counts["counted"] = counts["waiting"] + counts["running"] + counts["complete"]
    counts["total"] = len(trials)
    return counts


# --------------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------------


def claim_slot(trial: Any, n_trials: int) -> None:
    """End ``trial`` as surplus (``TrialPruned``, user attribute ``surplus``) when ``n_trials``
    counted trials (waiting, running or complete) have lower numbers. Trial numbers are handed out
    atomically by the storage, so of two workers that draw at once exactly the later one yields."""
    import optuna  # optional dependency: the sweep extra

    counted = trial.study.get_trials(deepcopy=False, states=_trial_states())
    if sum(t.number < trial.number for t in counted) >= n_trials:
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned(f"surplus: the study already has {n_trials} trials")


class TrialRunner:
    """The objective: train one agent for ``config.timesteps`` and score it on ``val``."""

    def __init__(self, config: SweepConfig, model_path: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore  # optional dependency: the sweep extra

        self.config = config
        self.model_path = Path(model_path)
        artifacts = config.artifact_path()
        artifacts.mkdir(parents=True, exist_ok=True)
        self.artifact_store = FileSystemArtifactStore(str(artifacts))
        self.current: int | None = None   # number of the trial in progress (for Ctrl-C requeueing)

    def trial_dir(self, number: int) -> Path:
        """The run folder of trial ``number`` of this study."""
        return Path(self.config.run_dir) / "trials" / self.config.study_name / f"trial_{number:04d}"

    def __call__(self, trial: Any) -> tuple[float, float]:
        from optuna.artifacts import upload_artifact  # optional dependency: the sweep extra
        from optuna.storages import RetryHeartbeatStaleTrialCallback  # optional dependency: the sweep extra

        self.current = trial.number
        study = trial.study
        claim_slot(trial, self.config.n_trials)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        origin = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        choice = suggest(trial, self.config)
        env_kwargs = {**self.config.env_kwargs, **({"reward": choice.reward} if choice.reward != "none" else {}),
                      **choice.reward_params}
        run_dir = self.trial_dir(origin if origin is not None else trial.number)
        train_config = TrainConfig(
            algo=choice.algo, env_id=self.config.env_id, dataset=self.config.dataset, data_root=self.config.data_root,
            model=str(self.model_path), env_kwargs=env_kwargs, timesteps=self.config.timesteps,
            n_envs=self.config.n_envs, seed=self.config.seed + (origin if origin is not None else trial.number),
            device=self.config.device, run_dir=str(run_dir), checkpoint_freq=max(1, self.config.timesteps // 4),
            eval_freq=10 * self.config.timesteps,  # no periodic val passes: the trial ends with one
            hyperparams=dict(choice.hyperparams), hyperparams_file=self.config.hyperparams_file, progress_bar=False)
        resume = self._resumable(run_dir, train_config, retry=origin is not None)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("resumed", resume)
        start = time.perf_counter()
        agent, run_dir = train(train_config, resume=resume)
        train_seconds = time.perf_counter() - start
        val = val_evaluator(train_config, run_dir / MODEL_NAME, self.config.eval_slots)(agent)
        artifact_id = upload_artifact(artifact_store=self.artifact_store, file_path=str(run_dir / AGENT_NAME),
                                      study_or_trial=trial)
        trial.set_user_attr("choice", asdict(choice))
        trial.set_user_attr("agent_artifact", artifact_id)
        trial.set_user_attr("val_mean_steps", val["mean_steps"])
        trial.set_user_attr("train_seconds", train_seconds)
        trial.set_user_attr("trial_seconds", time.perf_counter() - start)
        trial.set_user_attr("timesteps_done", int(agent.num_timesteps))
        return float(val["accuracy"]), float(val["mean_compute"])

    def _resumable(self, run_dir: Path, train_config: Any, retry: bool) -> bool:
        """Resume a retried trial's own run; move any other leftover folder aside (never delete it)."""
        config_path = run_dir / CONFIG_NAME
        if not run_dir.exists():
            return False
        if retry and config_path.is_file():
            saved = json.loads(config_path.read_text())
            if saved.get("env_kwargs") == json.loads(json.dumps(train_config.env_kwargs)) \
                    and saved.get("algo") == train_config.algo:
                return True
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"))
        return False


# --------------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------------


def run_worker(config: SweepConfig, model_path: Path, provenance: str, worker_index: int = 0,
               objective: Callable[[Any], tuple[float, float]] | None = None) -> dict[str, int]:
    """Draw and run trials until the study has ``n_trials`` complete ones; returns the final counts.
    ``objective`` replaces :class:`TrialRunner` (tests); it must call :func:`claim_slot` first."""
    import optuna  # optional dependency: the sweep extra
    from optuna.storages import fail_stale_trials  # optional dependency: the sweep extra
    from optuna.study import MaxTrialsCallback  # optional dependency: the sweep extra

    torch.set_num_threads(config.threads)
    quiet_optuna()
    storage = open_storage(config)
    probe = optuna.load_study(study_name=config.study_name, storage=storage)
    # A fresh seed per worker and per start: a restarted worker must not redraw its earlier points.
    seed = int(np.random.SeedSequence([config.seed, worker_index, len(probe.trials)]).generate_state(1)[0])
    study = open_study(config, storage, provenance, sampler_seed=seed)
    runner = objective or TrialRunner(config, model_path)
    counted_states = _trial_states()
    while True:
        fail_stale_trials(study)
        counts = trial_counts(study)
        if counts["complete"] >= config.n_trials:
            return counts
        if counts["counted"] >= config.n_trials and counts["waiting"] == 0:
            # Every remaining trial runs on another worker: wait, to take one over if that worker dies.
            time.sleep(config.heartbeat_interval)
            continue
        try:
            study.optimize(runner, callbacks=[MaxTrialsCallback(config.n_trials, states=counted_states)],
                           gc_after_trial=True)
        except KeyboardInterrupt:
            _requeue_interrupted(study, getattr(runner, "current", None), config.max_retry)
            raise


def _requeue_interrupted(study: Any, number: int | None, max_retry: int) -> None:
    """Queue a retry of the trial Ctrl-C stopped (Optuna marks it failed), like a stale trial's."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback  # optional dependency: the sweep extra
    from optuna.trial import TrialState  # optional dependency: the sweep extra

    if number is None:
        return
    trial = next((t for t in study.get_trials() if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def _worker_process(config_dict: dict[str, Any], storage: str | None, model_path: str, provenance: str,
                    worker_index: int) -> None:
    """One spawned worker. ``storage``: the URL as given (with any password: ``config_dict`` has it
    without), handed over the multiprocessing pipe, never on a command line."""
    config = SweepConfig.from_dict(config_dict)
    config.storage = storage
    config.validate()
    try:
        run_worker(config, Path(model_path), provenance, worker_index)
    except KeyboardInterrupt:
        pass


def run_workers(config: SweepConfig, model_path: Path, provenance: str) -> None:
    """``config.workers`` worker processes on this machine (in-process when 1)."""
    if config.workers == 1:
        run_worker(config, model_path, provenance)
        return
    context = multiprocessing.get_context("spawn")  # no forked torch / SQLite state
    processes = [context.Process(target=_worker_process, name=f"sweep-worker-{i}",
                                 args=(config.to_dict(), config.storage, str(model_path), provenance, i))
                 for i in range(config.workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join()
        raise
    failed = [(p.name, p.exitcode) for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"sweep worker(s) failed: {failed}; their trials are marked failed and will be retried: "
                           f"re-run the same command to finish the study")


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------


def resolve_main_model(config: SweepConfig) -> tuple[Path, str]:
    """(checkpoint path, provenance) of the main model every trial trains against."""
    path = Path(config.model) if config.model else model_cache.cached_default_model(
        load_dataset(config.dataset_name(), data_root=config.data_root), data_root=config.data_root)
    checkpoint = load_checkpoint(path, expected_dataset=config.dataset_name())
    return Path(path), checkpoint.provenance


def run_sweep(config: SweepConfig) -> dict[str, Any]:
    """Run (or resume, or join) the study with this machine's workers, then write the report."""
    import optuna  # optional dependency: the sweep extra

    config.validate()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / SWEEP_CONFIG_NAME, config.to_dict())
    quiet_optuna()
    storage = open_storage(config)
    model_path, provenance = resolve_main_model(config)
    open_study(config, storage, provenance)  # create it, or refuse a mismatch before any worker starts
    start = time.perf_counter()
    run_workers(config, model_path, provenance)
    study = optuna.load_study(study_name=config.study_name, storage=storage)
    report = build_report(config, study, model_path)
    report["model_provenance"] = provenance_of(load_checkpoint(model_path).model)
    report["wall_seconds_this_command"] = time.perf_counter() - start
    write_report(run_dir, report)
    return report


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area (accuracy x normalised compute) that ``(accuracy, compute)`` points dominate above
    ``reference[0]`` accuracy and below ``reference[1]`` compute; points outside add nothing."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's exact hypervolume (no public alias)

    ref_acc, ref_compute = reference
    losses = np.array([(-a, c) for a, c in points if a > ref_acc and c < ref_compute], dtype=float)
    if losses.size == 0:
        return 0.0
    return float(compute_hypervolume(losses, np.array([-ref_acc, ref_compute], dtype=float)))


def default_hv_reference(curves: dict[str, list[Any]], points: list[tuple[float, float]]) -> tuple[float, float]:
    """(accuracy, compute) reference of a split: the always-EXIT policy's accuracy (anything below it
    is worth nothing), and 1.1 x the largest compute of the fixed paths and of ``points``, so that
    every point that spends compute for accuracy adds area."""
    exit_now = next(r.accuracy for r in curves["fixed_paths"] if r.params["path"] == [])
    largest = max([r.mean_compute for r in curves["fixed_paths"]] + [c for _, c in points])
    return exit_now, 1.1 * largest


def _summaries(records: Any) -> Any:
    """JSON of a baseline: a list of records' summaries, or an exact curve's columns."""
    return records.to_json() if hasattr(records, "to_json") else [r.summary() for r in records]


def build_report(config: SweepConfig, study: Any, model_path: Path) -> dict[str, Any]:
    """Every trial, the Pareto set re-evaluated on ``test``, the baseline curves on ``val`` and
    ``test``, and the hypervolumes (see the module docstring)."""
    from optuna.artifacts import download_artifact  # optional dependency: the sweep extra
    from optuna.trial import TrialState  # optional dependency: the sweep extra

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"study {config.study_name!r} has no completed trial yet: nothing to report")
    pareto_numbers = {t.number for t in study.best_trials}
    options = {**evaluation_kwargs(config.env_kwargs), "dataset": config.dataset_name(), "device": config.device}
    if config.data_root:
        options["data_root"] = config.data_root
    cores = {"val": make_core(config.eval_slots, **options, model=str(model_path), split="val",
                              sample_mode="sequential")}
    cores["test"] = make_core(config.eval_slots, **{**options, **resolved_model_options(cores["val"])}, split="test",
                              sample_mode="sequential")
    baselines = {split: baseline_curves(core, seed=config.seed) for split, core in cores.items()}

    store = TrialRunner(config, model_path).artifact_store
    pareto: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in sorted((t for t in complete if t.number in pareto_numbers), key=lambda t: t.values[1]):
            choice = t.user_attrs["choice"]
            local = Path(tmp) / f"trial_{t.number}.zip"
            try:
                download_artifact(artifact_store=store, file_path=str(local),
                                  artifact_id=t.user_attrs["agent_artifact"])
            except Exception as exc:  # noqa: BLE001 - the store raises its own types
                raise ValueError(f"the agent of Pareto trial {t.number} (run by {t.user_attrs.get('worker')}) is "
                                 f"not in the artifact store {config.artifact_path()}: {exc}. Workers on several "
                                 f"machines need one shared --artifact-dir") from exc
            agent = get_algorithm(choice["algo"]).load(local, device=config.device)
            records = run_policy(cores["test"], agent, name=f"trial {t.number}")
            versus = vs_curve(records, baselines["test"]["confidence"], n_boot=config.n_boot, seed=config.seed)
            pareto.append({"number": t.number, **choice, "val_accuracy": t.values[0], "val_mean_compute": t.values[1],
                           "test_accuracy": records.accuracy, "test_mean_compute": records.mean_compute,
                           "test_mean_env_compute": float(records.env_compute.mean()),
                           "decision_flops": records.decision_flops,
                           "test_mean_steps": float(records.steps.mean()), "test_vs_confidence": versus})

    hv: dict[str, Any] = {}
    for split, agent_points in (("val", [(t.values[0], t.values[1]) for t in complete]),
                                ("test", [(p["test_accuracy"], p["test_mean_compute"]) for p in pareto])):
        curves = baselines[split]
        threshold_points = list(zip(curves["confidence"].accuracy.tolist(), curves["confidence"].mean_compute.tolist(),
                                    strict=True))
        reference = config.hv_reference or default_hv_reference(curves, agent_points + threshold_points)
        hv[split] = {"reference_point": {"accuracy": reference[0], "mean_compute": reference[1]},
                     "agent_front": hypervolume(agent_points, reference),
                     "confidence_threshold_front": hypervolume(threshold_points, reference),
                     "agent_points": "all completed trials" if split == "val" else "Pareto trials re-evaluated"}

    counts = trial_counts(study)
    trials = [{"number": t.number, "state": t.state.name, "pareto": t.number in pareto_numbers,
               "values": list(t.values) if t.values else None, "params": t.params,
               **{k: t.user_attrs.get(k) for k in ("choice", "worker", "resumed", "train_seconds", "val_mean_steps",
                                                  "surplus")},
               "retry_of": t.system_attrs.get("failed_trial"),
               "duration_seconds": (t.duration.total_seconds() if t.duration else None)}
              for t in study.get_trials(deepcopy=False)]
    durations = [t.duration.total_seconds() for t in complete if t.duration]
    return {
        "study_name": config.study_name,
        "storage": report_storage(config),
        "objectives": dict(zip(OBJECTIVE_NAMES, DIRECTIONS, strict=True)),
        "config": config.to_dict(),
        "dataset": config.dataset_name(),
        # What every compute figure is charged in (env_kwargs' cost): FLOPs executed or table-estimated seconds.
        "cost": cost_of(cores["val"]),
        "main_model_provenance": study.user_attrs.get("main_model_provenance"),
        "counts": counts,
        "complete": counts["complete"] >= config.n_trials,
        "study_wall_seconds": _study_span(complete),
        "mean_trial_seconds": float(np.mean(durations)) if durations else None,
        "trials": trials,
        "pareto": pareto,
        "hypervolume": hv,
        "baselines": {split: {name: _summaries(records) for name, records in curves.items()}
                      for split, curves in baselines.items()},
    }


def report_storage(config: SweepConfig) -> str:
    """The storage as a report names it: the default SQLite file relative to the run folder (a report
    must not carry a machine-local absolute path), any other URL with its password hidden."""
    if config.storage is None:
        return f"sqlite:///{STUDY_DB} (in the run folder)"
    return masked_url(config.storage)


def _study_span(trials: list[Any]) -> float | None:
    """Seconds from the first trial's start to the last one's end (all workers together)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def write_report(run_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png``, each written atomically."""
    paths = {"json": run_dir / REPORT_NAME, "md": run_dir / "sweep.md", "png": run_dir / "sweep.png"}
    plot_sweep(report, paths["png"])
    report["figure"] = paths["png"].name  # beside sweep.json: no machine-local path in the report
    atomic_write_json(paths["json"], report, default=str)
    atomic_write_text(paths["md"], render_sweep(report))
    return paths


__all__ = ["SweepConfig", "SearchRange", "TrialChoice", "TrialRunner", "claim_slot", "suggest", "open_storage", "open_study",
           "run_worker", "run_workers", "run_sweep", "build_report", "hypervolume", "trial_counts", "masked_url",
           "public_url", "url_has_password", "password_warning", "STORAGE_ENV", "SAFER_WAYS"]

"""The sweep's storage password stays secret (``agents/sweep.py``, ``train_agent.py sweep``).

Fast tests check how URLs are masked and stored, the one-line warning, ``DYNALAY_STORAGE`` and the
help text. Against a PostgreSQL server that asks for a known password: the driver takes it from
``PGPASSWORD``, ``~/.pgpass`` or a ``PGSERVICE`` service file when the URL has none, and errors never
show it. The slow tests run the real command: a sweep given the password the old way (in
``--storage``), a worker that joins it and a resume with two local workers, each followed by a scan
of everything the run wrote (run folders, the artifact folder, stdout, stderr, TensorBoard event
files, and every row Optuna stored). ``test_sweep`` runs two machines on such a server, one with
``PGPASSWORD`` and a password-free ``--storage``, one with ``~/.pgpass`` and ``DYNALAY_STORAGE``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest

import train_agent
from agents.sweep import (
    SAFER_WAYS,
    STORAGE_ENV,
    SweepConfig,
    masked_url,
    open_storage,
    password_warning,
    public_url,
    quiet_optuna,
    url_has_password,
)
from tests.agent_fixtures import ENV_ID, REPO, TINY_PPO, cli_env, digits_checkpoint, write_hyperparams
from tests.postgres_server import DATABASE, USER, PostgresServer, postgres_server
from tests.test_sweep import _check_complete_study, _sweep_cli

quiet_optuna()

#: The test server's password: distinctive, so that finding it anywhere is a leak, never a coincidence.
PASSWORD = "Dl26-kn0wn-S3cret-9Zq"
#: What the driver reads a password from besides the URL; cleared so that each test names its own.
PG_ENV = ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE")
SAFE_WAYS = ("PGPASSWORD", "~/.pgpass", "PGSERVICE", STORAGE_ENV)


# ---- URLs, config, warning (no server) ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "masked", "public"), [
    ("postgresql://user:secretpw@127.0.0.1:1/db", "postgresql://user:***@127.0.0.1:1/db",
     "postgresql://user@127.0.0.1:1/db"),
    ("postgresql+psycopg2://u:p%40ss%3Aw@h:5432/db?sslmode=require", "postgresql+psycopg2://u:***@h:5432/db?sslmode=require",
     "postgresql+psycopg2://u@h:5432/db?sslmode=require"),
    ("postgresql://u@h/db?password=secretpw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require",
     "postgresql://u@h/db?sslmode=require"),
    ("mysql+pymysql://u:secretpw@h/db", "mysql+pymysql://u:***@h/db", "mysql+pymysql://u@h/db"),
    # SQLAlchemy cannot parse this one (the port is not a number): still masked, up to the last @
    ("postgresql://u:secret@pw@h:port/db", "postgresql://u:***@h:port/db", "postgresql://u:***@h:port/db"),
])
def test_urls_are_shown_masked_and_stored_without_their_password(url, masked, public):
    assert masked_url(url) == masked and public_url(url) == public
    assert url_has_password(url) and not url_has_password(public)
    for shown in (masked_url(url), public_url(url)):
        assert "secret" not in shown and "p@ss" not in shown and "p%40ss" not in shown


@pytest.mark.parametrize("url", ["postgresql://user@db-host/dynalay", "postgresql://", "sqlite:////tmp/study.db",
                                 "postgresql+psycopg2://postgres@/postgres?host=/tmp/pg&port=5432"])
def test_a_url_without_a_password_is_kept_and_raises_no_warning(url):
    assert not url_has_password(url) and password_warning(url) is None
    assert masked_url(url) == public_url(url)
    from sqlalchemy.engine import make_url

    assert make_url(public_url(url)) == make_url(url)  # the same URL (rendered with its query quoted)


def test_the_config_keeps_the_password_for_connecting_only(tmp_path):
    url = "postgresql+psycopg2://sweeper:secretpw@db-host:5432/study"
    config = SweepConfig(storage=url, run_dir=str(tmp_path)).validate()
    assert config.storage_url() == url  # what open_storage connects with
    assert config.to_dict()["storage"] == "postgresql+psycopg2://sweeper@db-host:5432/study"
    assert "secretpw" not in repr(config) and "secretpw" not in json.dumps(config.to_dict())
    assert "secretpw" not in json.dumps(config.identity())  # what the study stores in its user attributes
    # What a spawned worker rebuilds from the dict, before it is handed the URL itself.
    assert SweepConfig.from_dict(config.to_dict()).validate().storage_url() == config.to_dict()["storage"]


def test_the_warning_is_one_line_naming_the_safer_ways_and_never_the_password():
    warning = password_warning("postgresql://sweeper:secretpw@db-host/study")
    assert warning is not None and "\n" not in warning and "secretpw" not in warning
    assert warning.startswith("warning: ") and "sweeper:***@db-host" in warning
    assert "postgresql://sweeper@db-host/study" in warning  # the URL to use instead
    assert all(way in warning for way in SAFE_WAYS) and SAFER_WAYS in warning


def _parsed_storage(argv: list[str]) -> str | None:
    return train_agent._sweep_config(train_agent.parse_args(["sweep", *argv])).storage


def test_dynalay_storage_is_read_when_storage_is_absent(monkeypatch, tmp_path):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert _parsed_storage([]) is None  # SQLite in the run folder
    monkeypatch.setenv(STORAGE_ENV, "postgresql://from-env@db-host/dynalay")
    assert _parsed_storage([]) == "postgresql://from-env@db-host/dynalay"
    assert _parsed_storage(["--storage", "postgresql://flag@db-host/dynalay"]) == "postgresql://flag@db-host/dynalay"
    monkeypatch.setenv(STORAGE_ENV, "")
    assert _parsed_storage([]) is None


@pytest.mark.parametrize("how", ["--storage", STORAGE_ENV])
def test_the_issue_s_command_prints_the_password_nowhere(monkeypatch, tmp_path, capsys, how):
    """The reported case: a password in the URL, no server listening. ``--storage`` warns once;
    ``DYNALAY_STORAGE`` may carry the password (a process's environment is its owner's alone)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://user:secretpw@127.0.0.1:{port}/db"
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    storage = ["--storage", url]
    if how == STORAGE_ENV:
        monkeypatch.setenv(STORAGE_ENV, url)
        storage = []
    run_dir = tmp_path / "sweep"
    code = train_agent.main(["sweep", "--env", ENV_ID, "--model", str(digits_checkpoint()), "--run-dir", str(run_dir),
                             "--n-trials", "1", *storage])
    out, err = capsys.readouterr()
    assert code == 2 and "cannot open the study storage" in err
    assert f"storage postgresql://user:***@127.0.0.1:{port}/db" in out
    warnings = [line for line in err.splitlines() if "carries a password" in line]
    assert len(warnings) == (1 if how == "--storage" else 0)
    assert "secretpw" not in out + err
    assert [p for p in run_dir.rglob("*") if p.is_file() and b"secretpw" in p.read_bytes()] == []
    assert json.loads((run_dir / "sweep_config.json").read_text())["storage"] == f"postgresql://user@127.0.0.1:{port}/db"


def _urls(text: str) -> list[str]:
    return re.findall(r"\b[a-z][a-z0-9+]*://[^\s`'\")]*", text)


def test_help_shows_the_safe_ways_and_no_password():
    parser = train_agent.build_parser()
    sweep_help = train_agent._subparsers(parser)["sweep"].format_help()
    assert all(way in sweep_help for way in SAFE_WAYS), sweep_help
    for text in (sweep_help, parser.format_help()):
        urls = _urls(text)
        assert any(u.startswith("postgresql://") for u in urls)
        assert not [u for u in urls if url_has_password(u)], text


@pytest.mark.parametrize("page", ["docs/sweeps.md", "docs/security.md"])
def test_the_docs_show_no_password_on_a_command_line(page):
    text = (REPO / page).read_text()
    urls = _urls(text)
    assert not [u for u in urls if url_has_password(u) and "***" not in u], page
    if page == "docs/sweeps.md":
        assert all(way in text for way in SAFE_WAYS)


# ---- a server that asks for the password --------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server(password=PASSWORD) as running:
        yield running


@pytest.fixture
def no_pg_secrets(monkeypatch, tmp_path) -> Path:
    """No password source in the environment; HOME is an empty folder (no ~/.pgpass). Returns HOME."""
    for name in (*PG_ENV, STORAGE_ENV):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _connects(url: str, tmp_path: Path, name: str) -> None:
    """Open the sweep's storage at ``url`` and write to a study there (raises if it cannot)."""
    storage = open_storage(SweepConfig(storage=url, run_dir=str(tmp_path / "run")).validate())
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    study.set_user_attr("probe", True)
    assert optuna.load_study(study_name=name, storage=storage).user_attrs["probe"] is True


@pytest.mark.parametrize("source", ["PGPASSWORD", "~/.pgpass", "PGSERVICE"])
def test_the_driver_reads_the_password_from_the_environment(server, no_pg_secrets, monkeypatch, tmp_path, source):
    url = server.url()  # no password
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        url = server.url(driver="postgresql")  # the bare scheme: psycopg2, the sweep extra's driver
    elif source == "~/.pgpass":
        pgpass = no_pg_secrets / ".pgpass"
        pgpass.write_text(f"*:{server.port}:{DATABASE}:{USER}:{PASSWORD}\n")
        pgpass.chmod(0o600)  # libpq ignores a file others can read
    else:
        service_file = tmp_path / "pg_service.conf"
        service_file.write_text(f"[dynalay]\nhost={server.socket_dir}\nport={server.port}\nuser={USER}\n"
                                f"dbname={DATABASE}\npassword={PASSWORD}\n")
        monkeypatch.setenv("PGSERVICEFILE", str(service_file))
        monkeypatch.setenv("PGSERVICE", "dynalay")
        url = "postgresql://"  # everything from the service
    _connects(url, tmp_path, f"probe-{source}")


def test_without_a_password_the_error_names_the_safer_ways(server, no_pg_secrets, tmp_path):
    with pytest.raises(ValueError, match="cannot open the study storage") as info:
        _connects(server.url(), tmp_path, "probe-none")
    assert "no password supplied" in str(info.value) and SAFER_WAYS in str(info.value)


def test_errors_never_show_the_password_even_when_the_server_echoes_it(server, no_pg_secrets, tmp_path):
    # The server names the database it cannot find: here that name is the password itself.
    echoed = server.url(PASSWORD, database=PASSWORD)
    wrong = server.url("not-" + PASSWORD)
    for url, reason in ((echoed, 'database "***" does not exist'), (wrong, "password authentication failed")):
        with pytest.raises(ValueError, match="cannot open the study storage") as info:
            _connects(url, tmp_path, "probe-error")
        shown = "".join(traceback.format_exception(info.value))  # what an uncaught error prints
        # The URL names the database (here the password's string, but not a secret): the rest must not.
        assert reason in shown and PASSWORD not in shown.replace(masked_url(url), "<url>"), shown


# ---- the real command (slow) ---------------------------------------------------------------------------


def _secret_free_env(tmp_path: Path) -> dict[str, str]:
    """A CLI environment with no password source: only what the test passes can connect."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in cli_env(tmp_path).items() if k not in (*PG_ENV, STORAGE_ENV)}
    return {**env, "HOME": str(home)}


def _leaks(roots: list[Path], texts: dict[str, str], storage_url: str, study_name: str) -> tuple[list[str], int]:
    """Where the password (or its URL-quoted form) appears: files under ``roots``, ``texts`` and every
    row of every table in the storage (Optuna's studies, trials and their attributes, read through
    SQL as text), plus the study's and trials' attributes through Optuna's API. Returns (places, files scanned)."""
    from sqlalchemy import create_engine, inspect, text

    needles = {PASSWORD, quote(PASSWORD, safe="")}
    places, scanned = [], 0
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            scanned += 1
            data = path.read_bytes()
            places += [str(path) for n in needles if n.encode() in data]
    places += [name for name, value in texts.items() for n in needles if n in value]
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    attributes = json.dumps([study.user_attrs,
                             [(t.user_attrs, t.system_attrs, t.params) for t in study.get_trials()]], default=str)
    places += ["Optuna attributes" for n in needles if n in attributes]
    engine = create_engine(storage_url)
    try:
        with engine.connect() as connection:
            for table in inspect(connection).get_table_names():
                rows = connection.execute(text(f'SELECT CAST(t AS text) FROM "{table}" AS t')).scalars().all()
                places += [f"table {table}" for n in needles if any(n in row for row in rows)]
    finally:
        engine.dispose()
    return places, scanned


@pytest.mark.slow
def test_a_sweep_a_joined_worker_and_a_resume_write_the_password_nowhere(tmp_path, server):
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    artifacts = tmp_path / "shared_artifacts"
    machine_a, machine_b = tmp_path / "machine_a", tmp_path / "machine_b"
    url = server.url(PASSWORD)  # the old way: the password in --storage, the only source there is
    env = _secret_free_env(tmp_path)
    steps = (("first sweep", machine_a, 1, 1), ("joined worker", machine_b, 2, 1),
             ("resume, two local workers", machine_a, 3, 2))
    for step, run_dir, n_trials, workers in steps:
        done = subprocess.run(_sweep_cli(run_dir, hyperparams, "--n-trials", str(n_trials), "--workers", str(workers),
                                         "--timesteps", "256", "--storage", url, "--study-name", "secret",
                                         "--artifact-dir", str(artifacts)),
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{step}:\n{done.stdout}{done.stderr}"
        warnings = [line for line in done.stderr.splitlines() if "carries a password" in line]
        assert len(warnings) == 1 and all(way in warnings[0] for way in SAFE_WAYS), done.stderr
        assert f"storage {masked_url(url)}" in done.stdout
        places, scanned = _leaks([machine_a, machine_b, artifacts], {"stdout": done.stdout, "stderr": done.stderr},
                                 url, "secret")
        assert places == [], f"{step}: the password is in {places}"
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name.startswith("events.out.tfevents") for p in written), "TensorBoard files were scanned"
        assert scanned >= 10
    study = optuna.load_study(study_name="secret", storage=url)
    complete = _check_complete_study(study, 3)
    ran_on = [Path(t.user_attrs["run_dir"]).parents[2] for t in sorted(complete, key=lambda t: t.number)]
    assert ran_on == [machine_a, machine_b, machine_a], "each step should have run one trial"
    for run_dir in (machine_a, machine_b):  # stored without the password, the rest of the URL kept
        assert json.loads((run_dir / "sweep_config.json").read_text())["storage"] == public_url(url)
        assert json.loads((run_dir / "sweep.json").read_text())["storage"] == masked_url(url)

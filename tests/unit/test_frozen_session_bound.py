"""The PostgreSQL bound on a frozen worker's transaction (issue 16 item 5): where it comes from and
how it reaches the connection (``persistence.database.pg_session_options``)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.config import EngineSettings, engine_settings_from_env
from engine.errors import InvalidInputError
from persistence.database import create_db_engine, pg_session_options

PG = "postgresql+psycopg://app@db.example/prov"
VAR = "PROVISION_DB_TRANSACTION_IDLE_SECONDS"


def test_the_bound_is_half_the_lease_unless_set() -> None:
    assert EngineSettings(lease_s=120).db_transaction_idle_s == 60
    assert EngineSettings(lease_s=1.5).db_transaction_idle_s == 1  # at least 1 s...
    assert EngineSettings(lease_s=0.5).db_transaction_idle_s == 0.5  # ...but never past the lease
    assert EngineSettings(lease_s=120, transaction_idle_s=5).db_transaction_idle_s == 5
    env = engine_settings_from_env({"PROVISION_LEASE_SECONDS": "30", VAR: "2.5"})
    assert env.db_transaction_idle_s == 2.5


@pytest.mark.parametrize("env", [{VAR: "121"}, {"PROVISION_LEASE_SECONDS": "10", VAR: "11"}])
def test_a_bound_longer_than_the_lease_is_refused_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine_settings_from_env(env)
    assert err.value.field == VAR and "at most the lease" in str(err.value)


def test_zero_leaves_the_server_settings() -> None:
    assert EngineSettings(transaction_idle_s=0).db_transaction_idle_s is None
    assert engine_settings_from_env({VAR: "0"}).db_transaction_idle_s is None


@pytest.mark.parametrize("idle", [-1, float("nan"), float("inf"), 200.0, "5", True])
def test_settings_built_in_code_are_checked_too(idle: object) -> None:
    with pytest.raises(InvalidInputError, match="EngineSettings.transaction_idle_s"):
        EngineSettings(lease_s=120, transaction_idle_s=idle)  # type: ignore[arg-type]


def test_the_options_join_those_already_in_the_url() -> None:
    url = pg_session_options(sa.make_url(PG + "?options=-csearch_path%3Dt_1"), 1.5)
    assert url.query["options"] == ("-csearch_path=t_1 -c idle_in_transaction_session_timeout=1500 "
                                    "-c lock_timeout=1500")
    assert pg_session_options(sa.make_url(PG), 60).query["options"] == (
        "-c idle_in_transaction_session_timeout=60000 -c lock_timeout=60000")


def test_only_postgresql_engines_get_them() -> None:
    pg = create_db_engine(PG, transaction_idle_s=2)  # no connection is opened here
    assert "lock_timeout=2000" in str(pg.url.query["options"])
    assert "options" not in create_db_engine(PG).url.query  # tools without a lease: the server's defaults
    lite = create_db_engine("sqlite://", transaction_idle_s=2)
    assert lite.url.query == {}
    pg.dispose()
    lite.dispose()

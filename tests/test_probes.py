"""What the probe port tells, and what the probes cost the database."""

from __future__ import annotations

import time

import psycopg
import requests

from conftest import POSTGRES_ADMIN, postgres_database, wait_until


def postgres_env(database: str, user: str = "postgres") -> dict[str, str]:
    return {
        "TEST_POSTGRES_DB": database,
        "TEST_POSTGRES_HOST": "127.0.0.1",
        "TEST_POSTGRES_PORT": "5432",
        "TEST_POSTGRES_USER": user,
    }


def sessions_of(database: str) -> int:
    """Sessions ever opened to ``database``."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=10) as admin:
        row = admin.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0])


def test_readiness_answers_a_short_reason_and_logs_the_database_error(serve):
    """The probe port answers anyone who reaches it: the database's own error (which
    names roles, hosts and databases) goes to the log, the probe answers the reason."""
    with postgres_database() as database:
        server = serve(env=postgres_env(database, user="svc_orders_rw"), migrate=False)
        response = requests.get(server.probe("/ready"), timeout=10)
        assert (response.status_code, response.text) == (
            400,
            "database 'default' does not answer\n",
        )
        wait_until(
            lambda: 'role "svc_orders_rw" does not exist' in server.output,
            10,
            "the database's error in the log",
            server,
        )
        assert "Readiness: failing: database 'default' does not answer: " in server.output


def test_readiness_keeps_one_database_session(serve):
    """Each /ready used to open and close a PostgreSQL session (5,000 probes made
    1,251): the readiness check keeps one."""
    with postgres_database() as database:
        server = serve(env=postgres_env(database), migrate=False)
        assert requests.get(server.probe("/ready"), timeout=10).status_code == 200
        before = sessions_of(database)
        with requests.Session() as client:
            for _ in range(200):
                assert client.get(server.probe("/ready"), timeout=10).status_code == 200
        time.sleep(1.5)  # sessions reach the statistics within a second
        assert sessions_of(database) - before <= 1


def test_readiness_reconnects_when_its_kept_session_is_ended(serve):
    """A kept session that the server ends (a restart, an idle timeout, an operator)
    costs no failed probe: the check connects afresh at once."""
    with postgres_database() as database:
        server = serve(env=postgres_env(database), migrate=False)
        assert requests.get(server.probe("/ready"), timeout=10).status_code == 200
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=10) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()[0]
        assert ended == 1
        assert requests.get(server.probe("/ready"), timeout=10).status_code == 200
        assert "Readiness: failing" not in server.output

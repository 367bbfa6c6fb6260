"""What the probe port tells, and what the probes cost the database."""

from __future__ import annotations

import re
import time

import psycopg
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import POSTGRES_ADMIN, postgres_database, run_serve, wait_until

ALIVE_WITH_TIMES = re.compile(
    r"Average response time: (\d+\.\d\d)ms Request queue size: (\d+) Rx\n"
)


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


def get_text(url: str) -> tuple[int, str]:
    response = requests.get(url, timeout=10)
    return response.status_code, response.text


def mean_response_ms(server) -> float:
    text = requests.get(server.probe("/metrics"), timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "response_time_average":
            return family.samples[0].value
    raise AssertionError("no response_time_average")


def test_alive_answers_the_mean_response_time_and_the_queue(serve):
    """As django-hurricane 1.6 answered /alive: once an app request was answered, the
    mean response time in milliseconds and the requests waiting for a worker."""
    server = serve()
    assert get_text(server.probe("/alive")) == (200, "alive\n")
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.url("/hello/"), timeout=10).status_code == 200
    wait_until(
        lambda: ALIVE_WITH_TIMES.fullmatch(get_text(server.probe("/alive"))[1]),
        10,
        "/alive to tell the mean response time",
        server,
    )
    wait_until(lambda: "request_counter_total 3.0" in get_text(server.probe("/metrics"))[1])
    status, text = get_text(server.probe("/alive"))
    mean, waiting = ALIVE_WITH_TIMES.fullmatch(text).groups()
    assert status == 200
    assert float(mean) == round(mean_response_ms(server), 2)
    assert waiting == "0"


def test_alive_without_metrics_says_alive(serve):
    server = serve("--no-metrics")
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert get_text(server.probe("/alive")) == (200, "alive\n")


def test_max_lifetime_fails_liveness_after_more_than_that_many_requests(serve):
    server = serve("--max-lifetime", "2")
    with requests.Session() as session:
        for _ in range(2):
            assert session.get(server.url("/hello/"), timeout=10).status_code == 200
        time.sleep(0.5)  # both requests are counted
        assert requests.get(server.probe("/alive"), timeout=10).status_code == 200
        assert session.get(server.url("/hello/"), timeout=10).status_code == 200
    wait_until(
        lambda: get_text(server.probe("/alive")) == (400, "max lifetime of 2 requests exceeded\n"),
        10,
        "liveness to fail past the third request",
        server,
    )


def test_liveness_answers_short_phrases_and_logs_the_errors(serve, tmp_path):
    """A liveness check that raises a database error or a SystemCheckError answers
    django-hurricane 1.6's phrase; the error's own text (hosts, users, passwords) is
    in the log only. A failing check's message follows 1.6's phrase."""
    raise_flag = tmp_path / "raise"
    fail_flag = tmp_path / "fail"
    server = serve(
        env={"TEST_LIVENESS_RAISE_FLAG": str(raise_flag), "TEST_LIVENESS_FAIL_FLAG": str(fail_flag)}
    )
    raise_flag.write_text("database")
    assert get_text(server.probe("/alive")) == (500, "database error\n")
    raise_flag.write_text("systemcheck")
    assert get_text(server.probe("/alive")) == (500, "django check error\n")
    raise_flag.unlink()
    fail_flag.touch()
    assert get_text(server.probe("/alive")) == (
        500,
        "django check error: ?: (testapp.E001) liveness flag file exists\n",
    )
    wait_until(
        lambda: 'user "svc_orders_rw"' in server.output and "hunter2@cache" in server.output,
        10,
        "the errors' own text in the log",
        server,
    )


def test_req_queue_len_zero_keeps_the_pod_out_of_the_service(serve, tmp_path):
    server = serve("--req-queue-len", "0")
    assert requests.get(server.probe("/startup"), timeout=10).status_code == 200
    assert requests.get(server.probe("/alive"), timeout=10).status_code == 200
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert requests.get(server.probe("/ready"), timeout=10).status_code == 400
    _, result = run_serve(tmp_path, HURRICANE_REQ_QUEUE_LEN="-1")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "HURRICANE_REQ_QUEUE_LEN" in lines[0] and "0 or more" in lines[0]

"""k8s-manifests/: every kustomization rendered, validated against the Kubernetes
schemas and cross-referenced by scripts/check_manifests.py (the script CI and the
docs/kubernetes.md name); yamllint and checkov pass; one broken fixture per kind of mistake is
rejected. And the manifests' wiring runs for real: the web and consumer containers,
started by the image's entrypoint with the environment the rendered ConfigMaps and
Secret give them, wait for the migration Job's command against PostgreSQL, serve,
and turn an AMQP message into a note."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import (
    ROOT,
    TEST_PROJECT,
    ServeProcess,
    base_env,
    entrypoint_env,
    free_port,
    postgres_database,
    run_entrypoint,
    status,
)

sys.path.insert(0, str(ROOT / "scripts"))
import check_manifests  # noqa: E402

BROKEN = ROOT / "tests" / "manifests" / "broken"
KUSTOMIZATIONS = check_manifests.kustomizations()


@pytest.fixture(scope="module")
def metrics_url(tmp_path_factory) -> Iterator[str]:
    """The /metrics of a real ``serve`` of the test project (ASGI, metrics on), after
    a request: the autoscalers' queries may name only what it exports."""
    folder = tmp_path_factory.mktemp("metrics")
    asgi = json.dumps({"ASGI_APPLICATION": "testproject.asgi.application"})
    port = free_port()
    server = ServeProcess(
        ["--asgi", "--port", str(port)],
        base_env(folder, TEST_SETTINGS=asgi),
        TEST_PROJECT,
        folder / "serve.log",
        port,
        port + 1,
    )
    try:
        server.wait_started()
        assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
        yield server.probe("/metrics")
    finally:
        server.kill()


@pytest.fixture(scope="module")
def exported(metrics_url: str) -> frozenset[str]:
    return check_manifests.exported_metric_names([metrics_url])


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_renders_valid_and_consistent(name: str) -> None:
    path = KUSTOMIZATIONS[name]
    assert check_manifests.check_kustomization(path) == []


@pytest.mark.parametrize("component", check_manifests.components(), ids=lambda path: path.name)
def test_component_renders_with_the_base(component: Path, exported: frozenset[str]) -> None:
    rendered = check_manifests.render_component(component)
    assert check_manifests.check_rendered(rendered, exported=exported) == []


def test_yamllint_passes() -> None:
    assert check_manifests.yamllint_problems([ROOT / "k8s-manifests", ROOT / ".checkov.yaml"]) == []


@pytest.mark.timeout(600)  # the first run installs checkov into .cache/
def test_checkov_passes_with_reasoned_skips() -> None:
    assert check_manifests.checkov_problems() == []
    config = (ROOT / ".checkov.yaml").read_text()
    skipped = [line.strip("- ").strip() for line in config.splitlines() if "- CKV" in line]
    assert skipped, "expected the skipped checks in .checkov.yaml"
    for check in skipped:
        assert f"# {check} " in config, f"{check} is skipped without a reason"


def test_keda_objects_are_validated_strictly_against_kedas_own_crds() -> None:
    """KEDA's kinds are not in the Kubernetes schemas: the copied CRDs validate them, and
    as the API server does, a field a schema does not list is refused."""
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "hurricane-web"},
        "spec": {
            "scaleTargetRef": {"name": "hurricane-web"},
            "minReplicaCount": 2,
            "triggers": [{"type": "cpu", "metadata": {"value": "70"}}],
        },
    }
    assert check_manifests.schema_problems([scaled]) == []
    scaled["spec"]["minReplicas"] = 2
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 70
    assert check_manifests.schema_problems([scaled]) == [
        "ScaledObject/hurricane-web: spec: Additional properties are not allowed "
        "('minReplicas' was unexpected) (KEDA's CRD)",
        "ScaledObject/hurricane-web: spec.triggers.0.metadata.value: 70 is not of type "
        "'string' (KEDA's CRD)",
    ]
    served = {key for key in check_manifests.CRD_VALIDATORS}
    assert ("keda.sh/v1alpha1", "TriggerAuthentication") in served


def test_strict_crd_schemas_keep_what_a_schema_leaves_open() -> None:
    schema = check_manifests.strict(
        {
            "type": "object",
            "properties": {
                "listed": {"type": "object", "properties": {"a": {"type": "string"}}},
                "open": {"type": "object", "additionalProperties": {"type": "string"}},
                "kept": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                # A field named like the keyword is a field, not a schema keyword.
                "properties": {"type": "string"},
            },
        }
    )
    assert schema["properties"]["properties"] == {"type": "string"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["listed"]["additionalProperties"] is False
    assert schema["properties"]["open"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema["properties"]["kept"]


BROKEN_FIXTURES = {
    "misspelt-field": "Additional properties are not allowed ('readinesProbe' was unexpected)",
    "wrong-type": "'forty-five' is not of type 'integer'",
    "mismatched-selector": "Service/hurricane-web: its selector matches no pod",
    "probe-on-undeclared-port": "readinessProbe uses port metrics, not declared",
    "unknown-variable": "`serve` does not understand HURRICANE_SHUTDOWN_DELAI",
    "short-grace-period": "terminationGracePeriodSeconds 30 is not more than",
    "debugger-in-production/production": "a debugger in production",
    "max-memory-over-limit": "HURRICANE_MAX_MEMORY 600 MB is not below the memory limit 512Mi",
    "secret-in-configmap": "DJANGO_SECRET_KEY looks like a secret: use a Secret",
    "bad-option-value": "invalid value 'soon' for --graceful-timeout",
    "runs-as-root": "must run as a numeric non-root user",
    "file-variable-not-read": "the entrypoint does not read SENTRY_AUTH_TOKEN_FILE",
    "service-links": "container web: the pod must set enableServiceLinks: false",
    "probe-port-open-to-all": "admits the probe port of Deployment/hurricane-web container web "
    "from every pod",
    "debugger-port-admitted": "admits the debugger port of Deployment/hurricane-web container web",
    "celery-beat-rolling": "beat needs replicas: 1 and strategy Recreate",
    "celery-grace-below-time-limit": "terminationGracePeriodSeconds 120 is not more than",
    "celery-unknown-variable": "`celery-worker` does not understand HURRICANE_CELERY_LOOP_TIMOUT",
    "ingress-backend-port-missing": "Ingress/hurricane-web: Service/hurricane-web has no port web",
    "ingress-timeout-below-ping": "proxy-read-timeout 15 s is not longer than the WebSocket "
    "pings' --ws-ping-interval 20 s of Deployment/hurricane-web container web",
    "keda-unknown-field": "ScaledObject/hurricane-web: spec: Additional properties are not "
    "allowed ('minReplicas' was unexpected) (KEDA's CRD)",
    "keda-target-missing": "ScaledObject/hurricane-web: no Deployment hurricane-webapp to scale",
    "two-autoscalers": "Deployment/hurricane-web is scaled by "
    "HorizontalPodAutoscaler/hurricane-web-memory and ScaledObject/hurricane-web at once",
    "replicas-under-autoscaler": "Deployment/hurricane-web sets replicas: 2, but "
    "ScaledObject/hurricane-web owns the count",
    "keda-queue-mismatch": "ScaledObject/hurricane-consumer: its rabbitmq trigger watches the "
    "queue 'note', but Deployment/hurricane-consumer container consumer consumes 'notes'",
    "keda-secret-key-missing": "TriggerAuthentication/hurricane-consumer-rabbitmq: "
    "Secret/hurricane-secrets-",  # the generated Secret's name ends in its hash
    "keda-broker-mismatch": "(rabbitmq:5672 vhost '/'), but Deployment/hurricane-consumer "
    "container consumer consumes at rabbitmq:5672 vhost 'shop'",
    "keda-queue-not-durable": "may scale Deployment/hurricane-consumer container consumer to "
    "zero (minReplicaCount 0), but its queue is not durable",
    "keda-web-to-zero": "may scale Deployment/hurricane-web container web to zero "
    "(minReplicaCount 0), but with no pod no request is in flight",
    "keda-query-unknown-metric": "ScaledObject/hurricane-web triggers[0]: the query names "
    "hurricane_http_requests_inflight, which Hurricane does not export",
    "adapter-rule-unknown-metric": "ConfigMap/hurricane-prometheus-adapter-rules config.yaml "
    "rules[0] seriesQuery: the query names request_queue_size, which Hurricane does not export",
    "hpa-custom-metric-not-made": "HorizontalPodAutoscaler/hurricane-web: scales on the custom "
    "metric hurricane_http_requests_busy, which no prometheus-adapter rule rendered here makes",
}


@pytest.mark.parametrize("fixture", sorted(BROKEN_FIXTURES))
def test_broken_fixture_is_rejected(fixture: str, exported: frozenset[str]) -> None:
    problems = check_manifests.check_kustomization(BROKEN / fixture, exported)
    assert any(BROKEN_FIXTURES[fixture] in problem for problem in problems), problems


def test_the_missing_secret_key_is_named() -> None:
    [problem] = check_manifests.check_kustomization(BROKEN / "keda-secret-key-missing")
    assert problem.endswith(" has no key amqp-uri (for the parameter host)"), problem


def test_script_exits_1_and_names_the_problem() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "scripts/check_manifests.py",
            "tests/manifests/broken/mismatched-selector",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "FAIL tests/manifests/broken/mismatched-selector" in result.stdout
    assert "its selector matches no pod" in result.stdout


def test_script_names_a_query_of_a_metric_hurricane_does_not_export(metrics_url: str) -> None:
    """The metrics come from a running server's /metrics, not from a list in the
    script: without it, the same query passes."""
    fixture = "tests/manifests/broken/keda-query-unknown-metric"
    script = [sys.executable, "scripts/check_manifests.py"]
    result = subprocess.run(
        [*script, "--metrics-from", metrics_url, fixture],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "hurricane_http_requests_inflight, which Hurricane does not export" in result.stdout
    unchecked = subprocess.run(
        [*script, fixture], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert unchecked.returncode == 0, unchecked.stdout


def test_the_exported_names_include_what_prometheus_stores_for_each_family(
    metrics_url: str, exported: frozenset[str]
) -> None:
    """A counter family x is stored as x_total, a histogram as x_bucket, x_sum and
    x_count, whether or not it has samples yet."""
    assert {
        "hurricane_http_requests_in_flight",
        "hurricane_http_request_backlog",
        "hurricane_http_requests_total",
        "hurricane_http_request_duration_seconds_bucket",
        "hurricane_http_request_duration_seconds_count",
        "hurricane_websocket_closes_total",
    } <= exported
    assert "hurricane_http_requests" not in exported
    assert "hurricane_http_request_duration_seconds" not in exported


def test_script_passes_the_manifests(metrics_url: str) -> None:
    kustomizations = [str(path.relative_to(ROOT)) for path in KUSTOMIZATIONS.values()]
    result = subprocess.run(
        [sys.executable, "scripts/check_manifests.py", "--metrics-from", metrics_url]
        + kustomizations,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == len(kustomizations)


def test_script_help_shows_the_usage() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/check_manifests.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "usage: check_manifests.py [-h] [--metrics-from URL_OR_FILE] [DIR ...]"
    )
    assert "$CHECKOV" in result.stdout


def test_script_without_the_test_extra_says_what_to_install() -> None:
    """As on a machine without the test extra: kubernetes-validate cannot be imported."""
    no_extra = (
        "import runpy, sys; sys.modules['kubernetes_validate'] = None; "
        "sys.argv = ['scripts/check_manifests.py']; "
        "runpy.run_path('scripts/check_manifests.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_extra], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "check_manifests: kubernetes_validate is not installed; it comes with the test "
        f'extra: pip install -e "{ROOT}[test]"\n'
    )


def test_the_production_overlay_needs_no_operator_crd() -> None:
    """The PodMonitor is opt-in: a cluster without the Prometheus Operator can apply the
    production overlay as it is."""
    objects = check_manifests.parse(check_manifests.render(KUSTOMIZATIONS["overlays/production"]))
    kinds = {(item["apiVersion"], item["kind"]) for item in objects}
    assert not kinds & check_manifests.CRD_KINDS
    overlay = (KUSTOMIZATIONS["overlays/production"] / "kustomization.yaml").read_text()
    assert "# - ../../components/podmonitor" in overlay


# -- autoscaling ---------------------------------------------------------------------------

COMPONENTS = ROOT / "k8s-manifests" / "components"


def render_overlay(text: str) -> list[dict]:
    """Objects of a kustomization written here, in a folder beside the manifests
    (kustomize takes relative paths only): ``ROOT`` stands for the repository."""
    scratch = ROOT / ".cache"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        Path(folder, "kustomization.yaml").write_text(
            text.replace("ROOT", os.path.relpath(ROOT, folder))
        )
        return check_manifests.parse(check_manifests.render(Path(folder)))


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_keda_takes_over_from_the_base_hpa() -> None:
    """The web ScaledObject replaces the base's CPU HPA (KEDA makes an HPA of its own,
    under the same name, taking over one applied before), and follows a namePrefix."""
    objects = check_manifests.parse(
        check_manifests.render_component(COMPONENTS / "autoscaling-keda")
    )
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    [scaled] = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "hurricane-web"}
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == "hurricane-web"
    annotations = scaled["metadata"]["annotations"]
    assert annotations["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"

    prefixed = render_overlay(
        "resources: [ROOT/k8s-manifests/base]\n"
        "components: [ROOT/k8s-manifests/components/autoscaling-keda]\n"
        "namePrefix: staging-\n"
    )
    [scaled] = of_kind(prefixed, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "staging-hurricane-web"
    assert check_manifests.reference_problems(prefixed) == []


def test_keda_scales_consumer_and_workers_on_their_queues_with_the_demo_secret(
    exported: frozenset[str],
) -> None:
    """Web, consumer and Celery workers under KEDA together, on the demo: the
    TriggerAuthentications follow the generated Secret's name to its amqp-url, the
    consumer may go to zero on a durable queue, the workers keep one, and neither
    Deployment fixes its replicas any more."""
    objects = render_overlay(
        "resources: [ROOT/k8s-manifests]\n"
        "components:\n"
        + "".join(
            f"  - ROOT/k8s-manifests/components/{name}\n"
            for name in (
                "consumer",
                "celery",
                "autoscaling-keda",
                "autoscaling-keda-consumer",
                "autoscaling-keda-celery",
            )
        )
    )
    assert check_manifests.check_rendered(check_manifests.dump(objects), exported=exported) == []
    scaled = {obj["metadata"]["name"]: obj["spec"] for obj in of_kind(objects, "ScaledObject")}
    assert scaled["hurricane-consumer"]["minReplicaCount"] == 0
    assert scaled["hurricane-celery-worker"]["minReplicaCount"] == 1
    assert scaled["hurricane-celery-worker"]["triggers"][0]["metadata"]["queueName"] == "celery"
    [secret] = of_kind(objects, "Secret")
    for auth in of_kind(objects, "TriggerAuthentication"):
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "host", "name": secret["metadata"]["name"], "key": "amqp-url"}
        ]
    url = base64.b64decode(secret["data"]["amqp-url"]).decode()
    assert url == "amqp://guest:guest@rabbitmq:5672/%2F"
    consumer = rendered_container(objects, "Deployment/hurricane-consumer")
    assert consumer.options().durable
    for name in ("hurricane-consumer", "hurricane-celery-worker"):
        [deployment] = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == name]
        assert "replicas" not in deployment["spec"]


def test_a_celery_trigger_follows_the_workers_queues() -> None:
    assert check_manifests.celery_queues(["celery-worker", "--loglevel", "INFO"]) == ["celery"]
    assert check_manifests.celery_queues(["celery-worker", "-Q", "mail,pdf"]) == ["mail", "pdf"]
    assert check_manifests.celery_queues(["celery-worker", "--queues=mail"]) == ["mail"]
    assert check_manifests.celery_queues(["celery-worker", "-Qmail"]) == ["mail"]
    objects = render_overlay(
        "resources: [ROOT/k8s-manifests/base]\n"
        "components: [ROOT/k8s-manifests/components/celery,"
        " ROOT/k8s-manifests/components/autoscaling-keda-celery]\n"
        "patches:\n"
        "  - target: {kind: Deployment, name: hurricane-celery-worker}\n"
        "    patch: |-\n"
        "      - {op: add, path: /spec/template/spec/containers/0/args/-, value: -Qmail}\n"
    )
    assert check_manifests.keda_problems(objects) == [
        "ScaledObject/hurricane-celery-worker: its rabbitmq trigger watches the queue 'celery', "
        "but Deployment/hurricane-celery-worker container celery-worker consumes 'mail'"
    ]


def test_the_production_overlay_with_keda_names_its_queue_in_the_trigger() -> None:
    """The production overlay's consumer takes the queue "orders": with the KEDA
    component the trigger must say so too, as the component's comment shows."""
    components = (
        "resources: [ROOT/k8s-manifests/overlays/production]\n"
        "components: [ROOT/k8s-manifests/components/autoscaling-keda-consumer]\n"
    )
    objects = render_overlay(components)
    assert check_manifests.keda_problems(objects) == [
        "ScaledObject/hurricane-consumer: its rabbitmq trigger watches the queue 'notes', but "
        "Deployment/hurricane-consumer container consumer consumes 'orders'"
    ]
    objects = render_overlay(
        components + "patches:\n"
        "  - target: {kind: ScaledObject, name: hurricane-consumer}\n"
        "    patch: |-\n"
        "      - {op: replace, path: /spec/triggers/0/metadata/queueName, value: orders}\n"
    )
    assert check_manifests.keda_problems(objects) == []


def test_prometheus_adapter_replaces_the_hpas_metric_and_keeps_the_overlays_bounds(
    exported: frozenset[str],
) -> None:
    """Without KEDA: the same HPA, on the pods' requests in flight from the adapter's
    rule instead of CPU; the production overlay's 3-20 pods still apply."""
    objects = render_overlay(
        "resources: [ROOT/k8s-manifests/overlays/production]\n"
        "components: [ROOT/k8s-manifests/components/autoscaling-prometheus-adapter]\n"
    )
    assert check_manifests.check_rendered(check_manifests.dump(objects), True, exported) == []
    [hpa] = of_kind(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "hurricane_http_requests_in_flight"},
                "target": {"type": "AverageValue", "averageValue": "45"},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        },
    ]
    [(where, rule)] = list(check_manifests.adapter_rules(objects))
    assert where == "ConfigMap/hurricane-prometheus-adapter-rules config.yaml rules[0]"
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert of_kind(objects, "ScaledObject") == []


# -- the rendered wiring, run --------------------------------------------------------------


def rendered_container(objects: list[dict], workload: str) -> check_manifests.Container:
    for container in check_manifests.containers(objects):
        if check_manifests.describe(container.workload) == workload:
            return container
    raise AssertionError(f"no {workload} in the rendered manifests")


def pod_environment(
    container: check_manifests.Container, objects: list[dict], tmp_path: Path, **local: str
) -> dict[str, str]:
    """The container's environment from the rendered manifests, run here: the Secret's
    keys as files in tmp_path (where the pod mounts them), then ``local`` (where this
    machine differs from a cluster: database host, ports)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for obj in objects:
        if obj["kind"] == "Secret":
            for key, value in obj.get("data", {}).items():
                (secrets / key).write_bytes(base64.b64decode(value))
    mount = next(m["mountPath"] for m in container.spec["volumeMounts"] if m["name"] == "secrets")
    environment = {
        name: value.replace(mount, str(secrets)) if name.endswith("_FILE") else value
        for name, value in container.environment.items()
    }
    return entrypoint_env(tmp_path, **{**environment, **local})


@pytest.mark.timeout(180)
def test_rendered_demo_waits_for_the_migration_job_then_serves_and_consumes(
    tmp_path: Path, start, broker
) -> None:
    objects = check_manifests.parse(check_manifests.render(ROOT / "k8s-manifests"))
    web = rendered_container(objects, "Deployment/hurricane-web")
    job = rendered_container(objects, "Job/hurricane-migrate")
    consumer_objects = check_manifests.parse(
        check_manifests.render_component(
            ROOT / "k8s-manifests" / "components" / "consumer", onto=ROOT / "k8s-manifests"
        )
    )
    consumer = rendered_container(consumer_objects, "Deployment/hurricane-consumer")
    names = broker.names()
    with postgres_database() as database:
        database_here = {"DEMO_DB_HOST": "127.0.0.1", "DEMO_DB_NAME": database}
        database_here["DEMO_DB_USER"] = "postgres"
        app_port, probe_port = free_port(), free_port()
        web_env = pod_environment(
            web,
            objects,
            tmp_path,
            **database_here,
            HURRICANE_PORT=str(app_port),
            HURRICANE_PROBE_PORT=str(probe_port),
            HURRICANE_SHUTDOWN_DELAY="0.5",
        )
        server = start(web.spec["args"], web_env)
        probe = f"http://127.0.0.1:{probe_port}"
        server.wait_for(lambda: status(probe + "/alive") == 200, "the probe server")
        # The database password came from its file (HURRICANE_FILE_VARS lists it).
        assert "DEMO_DB_PASSWORD=*****" in server.stderr.splitlines()[0]
        # No migration has run: the pod waits (startup 400, not ready), never crashes.
        time.sleep(2)
        assert status(probe + "/startup") == 400
        assert status(probe + "/ready") != 200
        assert server.process.poll() is None, server.output

        migrated = run_entrypoint(
            job.spec["args"], pod_environment(job, objects, tmp_path, **database_here), tmp_path
        )
        assert migrated.returncode == 0, migrated.stderr
        server.wait_for(lambda: status(probe + "/startup") == 200, "startup after the Job", 60)
        server.wait_for(lambda: status(probe + "/ready") == 200, "readiness")
        created = requests.post(
            f"http://127.0.0.1:{app_port}/notes/", json={"text": "from the web"}, timeout=5
        )
        assert created.status_code == 201, created.text

        consumer_probe_port = free_port()
        consumer_env = pod_environment(
            consumer,
            consumer_objects,
            tmp_path,
            **database_here,
            AMQP_HOST="127.0.0.1",
            HURRICANE_QUEUE=names.queue,
            HURRICANE_EXCHANGE=names.exchange,
            HURRICANE_PROBE_PORT=str(consumer_probe_port),
        )
        consuming = start(consumer.spec["args"], consumer_env)
        consumer_probe = f"http://127.0.0.1:{consumer_probe_port}"
        consuming.wait_for(lambda: status(consumer_probe + "/ready") == 200, "consumer ready", 60)
        broker.publish(names.exchange, names.queue, ["from the broker"])

        def texts() -> list[str]:
            notes = requests.get(f"http://127.0.0.1:{app_port}/notes/", timeout=5).json()
            return [note["text"] for note in notes["notes"]]

        # The demo handler stores the message body as it came: JSON text.
        server.wait_for(lambda: '"from the broker"' in texts(), "the consumed note")
        assert "from the web" in texts()
        assert consuming.terminate() == 0, consuming.output
        assert server.terminate() == 0, server.output


def test_the_production_consumer_keeps_what_it_gives_up() -> None:
    """In production, a message given up (past --max-deliveries, or too large) goes to
    a dead-letter queue instead of being dropped, and a quorum queue counts its
    deliveries across the consumer pods."""
    objects = check_manifests.parse(check_manifests.render(KUSTOMIZATIONS["overlays/production"]))
    options = rendered_container(objects, "Deployment/hurricane-consumer").options()
    assert options.dead_letter_exchange == "shop.dead-letter"
    assert options.queue_type == "quorum"
    assert options.max_deliveries == 5
    assert options.max_message_size == 16 * 1024**2

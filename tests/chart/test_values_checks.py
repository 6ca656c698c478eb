"""values.schema.json and validateValues refuse what cannot work, each with a
message that says what to change."""

import json
import re

import helm_python
import pytest

from chart_support import CHART_DIR, one, pod_spec, render, render_objects, values_for


def render_error(values) -> str:
    with pytest.raises(helm_python.HelmError) as raised:
        render(values)
    return str(raised.value)


def test_the_schema_rejects_a_typo_in_a_key():
    message = render_error({"replicaCout": 3})

    assert "replicaCout" in message


def test_the_schema_rejects_a_typo_in_a_nested_key():
    message = render_error({"database": {"existingSecrte": "db"}})

    assert "existingSecrte" in message


def test_the_schema_rejects_a_wrong_type():
    message = render_error({"replicaCount": "three"})

    assert "replicaCount" in message


@pytest.mark.parametrize("image", ["app", "sidecar"])
def test_the_schema_rejects_the_latest_tag(image):
    message = render_error({"image": {image: {"tag": "latest"}}})

    assert f"at '/image/{image}/tag': 'latest' does not match pattern" in message, message


def test_the_schema_accepts_tags_that_only_look_like_latest():
    for tag in ("", "l", "lates", "latest1", "1.2.3", "late-2026"):
        render({"image": {"app": {"tag": tag}}, "tests": {"image": {"tag": tag or "8.11.1"}}})


@pytest.mark.parametrize(("values", "path"), [
    ({"env": {"DATABASE_URL": "postgres://u:p@db/todo"}}, "/env/DATABASE_URL"),
    ({"env": {"PGPASSWORD": "hunter2"}}, "/env/PGPASSWORD"),
    ({"sidecar": {"env": {"DATABASE_URL": "postgres://u:p@db/todo"}}}, "/sidecar/env/DATABASE_URL"),
    ({"sidecar": {"env": {"PGPASSWORD": "hunter2"}}}, "/sidecar/env/PGPASSWORD"),
])
def test_the_schema_refuses_a_database_url_or_password_in_env(values, path):
    message = render_error(values)

    assert f"at '{path}': false schema" in message, message
    assert "hunter2" not in message and "u:p@" not in message, "the value is never echoed"


# (values, the message validateValues gives): each inconsistent combination.
INCONSISTENT = {
    "podsecuritypolicy": (
        {"podSecurityPolicy": {"enabled": True, "name": "restricted"}},
        "podSecurityPolicy.enabled: PodSecurityPolicy was removed in Kubernetes 1.25 and this chart does not render one",
    ),
    "s3-without-bucket": (
        {"backup": {"store": {"kind": "s3"}}},
        "backup.store.s3.bucket: required when backup.store.kind is s3",
    ),
    "local-store-without-volume": (
        {"persistence": {"enabled": False}},
        "persistence.enabled: the local backup store needs the backup volume",
    ),
    "ingress-without-hosts": (
        {"ingress": {"enabled": True, "hosts": []}},
        "ingress.hosts: at least one host is required",
    ),
    "ingress-tls-without-hosts": (
        {"ingress": {"enabled": True, "hosts": [{"host": "a.example.com"}], "tls": [{"secretName": "t"}]}},
        'ingress.tls: the entry with secretName "t" has no hosts',
    ),
    "hpa-min-above-max": (
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (3)",
    ),
    "hpa-without-target": (
        {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0, "targetMemoryUtilizationPercentage": 0}},
        "autoscaling: set targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage",
    ),
    "file-without-sink": (
        {"logging": {"destination": "file"}},
        "logging.destination is file but no logging.sinks entry is configured",
    ),
    "sink-with-stdout-destination": (
        {"logging": {"destination": "stdout", "sinks": {"loki": {"url": "http://loki:3100"}}}},
        "logging.sinks are configured but logging.destination is stdout: the sidecar ships only the log file (use file or both)",
    ),
    "sink-without-url": (
        {"logging": {"sinks": {"elasticsearch": {"tokenSecret": {"name": "es-token"}}}}},
        "logging.sinks.elasticsearch.url: required when logging.sinks.elasticsearch.tokenSecret.name is set",
    ),
    "tracing-without-endpoint": (
        {"tracing": {"enabled": True}},
        "tracing.endpoint: required when tracing.enabled is true",
    ),
    "tls-without-secret": (
        {"tls": {"enabled": True}},
        "tls.secretName: required when tls.enabled is true",
    ),
    "certificate-without-issuer": (
        {"tls": {"enabled": True, "secretName": "x", "certificate": {"create": True}}},
        "tls.certificate.issuerRef.name: required",
    ),
    "grace-period-too-short": (
        {"terminationGracePeriodSeconds": 30},
        "terminationGracePeriodSeconds (30) is shorter than the shutdown needs (60 s",
    ),
    "chart-owned-app-port": (
        {"app": {"config": {"server": {"port": 8080}}}},
        "app.config.server.port is set by the chart",
    ),
    "chart-owned-app-host": (
        {"app": {"config": {"server": {"host": "127.0.0.1"}}}},
        "app.config.server.host is set by the chart (the API listens on 3000 in the pod; change service.port for the Service)",
    ),
    "chart-owned-admin-port": (
        {"app": {"config": {"admin": {"port": 9100}}}},
        "app.config.admin.port is set by the chart (probes and the sidecar use 9000)",
    ),
    "chart-owned-admin-host": (
        {"app": {"config": {"admin": {"host": "127.0.0.1"}}}},
        "app.config.admin.host is set by the chart (probes and the sidecar use 9000)",
    ),
    "chart-owned-app-tls": (
        {"app": {"config": {"tls": {"cert_path": "/etc/tls/tls.crt"}}}},
        "app.config.tls is set by the chart: use tls.enabled and tls.secretName",
    ),
    "chart-owned-log-stdout": (
        {"app": {"config": {"log": {"stdout": False}}}},
        "app.config.log.stdout is set by the chart: use logging.destination, logging.maxBytes and logging.maxFiles",
    ),
    "chart-owned-log-max-bytes": (
        {"app": {"config": {"log": {"max_bytes": 1048576}}}},
        "app.config.log.max_bytes is set by the chart: use logging.destination, logging.maxBytes and logging.maxFiles",
    ),
    "chart-owned-log-max-files": (
        {"app": {"config": {"log": {"max_files": 9}}}},
        "app.config.log.max_files is set by the chart: use logging.destination, logging.maxBytes and logging.maxFiles",
    ),
    "database-url-in-sidecar-config": (
        {"sidecar": {"config": {"database": {"url": "postgres://u:hunter2@db/todo"}}}},
        "sidecar.config.database.url: never put the database URL in values; set database.*",
    ),
    "chart-owned-logship-paths": (
        {"sidecar": {"config": {"logship": {"paths": ["/var/log/other.log"]}}}},
        "sidecar.config.logship.paths is set by the chart: use logging.destination and logging.sinks",
    ),
    "database-url-in-app-config": (
        {"app": {"config": {"database": {"url": "postgres://u:p@db/todo"}}}},
        "app.config.database.url: never put the database URL in values",
    ),
    "chart-owned-log-file": (
        {"app": {"config": {"log": {"file": "/tmp/app.log"}}}},
        "app.config.log.file is set by the chart",
    ),
    "chart-owned-drain-timeout": (
        {"sidecar": {"config": {"logship": {"drain_timeout_seconds": 5}}}},
        "sidecar.config.logship.drain_timeout_seconds is set by the chart",
    ),
    "chart-owned-backup-store": (
        {"sidecar": {"config": {"backup": {"store": {"kind": "s3"}}}}},
        "sidecar.config.backup.store is set by the chart",
    ),
    "endpoint-without-a-port": (
        {"networkPolicy": {"enabled": True},
         "sidecar": {"env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector.observability"}}},
        "networkPolicy.endpoints.tracing.port: the tracing URL names no port and its scheme is neither http nor https",
    ),
    "velero-with-a-single-node-volume": (
        {"velero": {"enabled": True}},
        "velero.enabled with the local backup store needs persistence.accessModes [ReadWriteMany]",
    ),
}

INCONSISTENT_IN_PRODUCTION = {
    "no-existing-secret": (
        {"database": {"existingSecret": ""}},
        "database.existingSecret: required in production",
    ),
    "password-in-values": (
        {"database": {"password": "hunter2"}},
        "database.password: not allowed in production",
    ),
    "one-replica": (
        {"autoscaling": {"enabled": False}, "replicaCount": 1},
        "replicaCount: at least 2 in production",
    ),
    "one-replica-under-the-hpa": (
        {"autoscaling": {"enabled": True, "minReplicas": 1}},
        "autoscaling.minReplicas: at least 2 in production",
    ),
    "no-disruption-budget": (
        {"podDisruptionBudget": {"enabled": False}},
        "podDisruptionBudget.enabled: required in production",
    ),
}


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
def test_validate_values_refuses_an_inconsistent_combination_with_its_message(case):
    values, expected = INCONSISTENT[case]

    message = render_error(values)

    assert "todo-backend: invalid values" in message
    assert f"\n- {expected}" in message, message
    assert "hunter2" not in message, "a password is never echoed"


@pytest.mark.parametrize("case", sorted(INCONSISTENT_IN_PRODUCTION))
def test_validate_values_refuses_what_production_must_not_run(case):
    values, expected = INCONSISTENT_IN_PRODUCTION[case]

    message = render_error(values_for(["values-production.yaml"], values))

    assert expected in message, message
    assert "hunter2" not in message, "a password is never echoed"


def test_every_message_of_validate_values_has_a_case_above():
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    messages = re.findall(r'\$errors = append \$errors \(?(?:printf )?"((?:[^"\\]|\\.)*)"', helpers)
    expected = [message for _, message in (*INCONSISTENT.values(), *INCONSISTENT_IN_PRODUCTION.values())]

    # A case's expected text is the start of a message; a message made with
    # printf is matched by its fixed start, before its first %-verb.
    def tested(message):
        fixed = message.split("%")[0]
        return any(fixed.startswith(e) or e.startswith(fixed) for e in expected)

    untested = [m for m in messages if not tested(m)]
    assert len(messages) >= 30, messages
    assert not untested, f"validateValues messages without a test case: {untested}"


def test_every_problem_is_reported_at_once():
    message = render_error({"backup": {"store": {"kind": "s3"}}, "tracing": {"enabled": True}})

    assert "backup.store.s3.bucket" in message and "tracing.endpoint" in message


def test_a_development_password_becomes_a_hook_secret_the_pods_read_through_pgpassword():
    objects = render_objects({"database": {"password": "dev-only"}})

    secret = one(objects, "Secret")
    env = {e["name"]: e for e in pod_spec(one(objects, "Deployment"))["containers"][0]["env"]}

    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "password"}
    assert "dev-only" not in env["DATABASE_URL"]["value"]
    notes = next(text for path, text in render({"database": {"password": "dev-only"}}).items() if path.endswith("NOTES.txt"))
    assert "WARNING: DEVELOPMENT ONLY" in notes


def test_the_podsecuritypolicy_key_of_the_plan_is_accepted_when_disabled():
    objects = render_objects({"podSecurityPolicy": {"enabled": False, "name": "restricted"}})

    assert not [o for o in objects if o["kind"] == "PodSecurityPolicy"]


def schema_paths(node, prefix: str = ""):
    # A boolean schema (`false`: the key is refused) has no properties.
    properties = node.get("properties", {}) if isinstance(node, dict) else {}
    for key, child in properties.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from schema_paths(child, path)


def test_every_key_the_schema_accepts_is_documented_with_a_param_line_and_no_other():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    params = set(re.findall(r"^\s*## @param (\S+)", (CHART_DIR / "values.yaml").read_text(), re.MULTILINE))
    paths = set(schema_paths(schema))

    # A key is documented by its own line, a line of an enclosing map
    # (`image.pullSecrets` documents its items), or lines of its children.
    undocumented = sorted(
        path for path in paths
        if path not in params
        and not any(path.startswith(f"{param}.") for param in params)
        and not any(param.startswith(f"{path}.") for param in params)
    )
    assert not undocumented, f"keys the schema accepts without a ## @param line: {undocumented}"
    assert params <= paths, f"## @param lines for keys the schema refuses: {sorted(params - paths)}"

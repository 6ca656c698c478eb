"""Every manifest the chart renders, for every values file: valid for
Kubernetes 1.30, restricted Pod Security Standard, resources, probes, no
secret in a ConfigMap, pinned images, consistent labels and selectors, a
grace period that covers the shutdown, and a NetworkPolicy for every port."""

from __future__ import annotations

import functools
import re
import urllib.parse

import kubernetes_validate
import pytest
import yaml

from chart_support import (
    RELEASE,
    REPO_ROOT,
    VALUES_FILES,
    chart_values,
    config_file,
    containers,
    of_kind,
    one,
    pod_spec,
    render_objects,
    values_for,
)

KUBERNETES_VERSION = "1.30.0"
# Custom resources: kubernetes-validate has no schema for them; their shape is
# checked by the tests below that use them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "Schedule", "Certificate"}
CASES = sorted(VALUES_FILES)


@functools.lru_cache(maxsize=None)
def objects_for(case: str):
    return render_objects(values_for(VALUES_FILES[case]))


def workloads(objects):
    return [(obj, pod_spec(obj)) for obj in objects if pod_spec(obj) is not None]


def pod_template_labels(obj) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions with In) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid_for_kubernetes_1_30(case):
    checked = 0
    for obj in objects_for(case):
        if obj["kind"] in CUSTOM_KINDS:
            continue

        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

        checked += 1
    assert checked >= 8


# The volume types the restricted Pod Security Standard allows ("Volume Types").
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


@pytest.mark.parametrize("case", CASES)
def test_every_pod_passes_the_restricted_pod_security_standard(case):
    for obj, spec in workloads(objects_for(case)):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0 and pod["fsGroup"] > 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert len(kinds) == 1 and kinds <= RESTRICTED_VOLUME_TYPES, (where, volume["name"], kinds)
        for container in containers(spec):
            context = container["securityContext"]
            what = f"{where} container {container['name']}"
            assert context["allowPrivilegeEscalation"] is False, what
            assert context["capabilities"]["drop"] == ["ALL"], what
            assert not context["capabilities"].get("add"), what
            assert context["runAsNonRoot"] is True, what
            assert context["readOnlyRootFilesystem"] is True, what
            assert context["seccompProfile"]["type"] == "RuntimeDefault", what
            assert not context.get("privileged"), what
            assert not any("hostPort" in port for port in container.get("ports", [])), what


@pytest.mark.parametrize("case", CASES)
def test_every_container_has_requests_and_limits(case):
    for obj, spec in workloads(objects_for(case)):
        for container in containers(spec):
            resources = container["resources"]
            what = f"{obj['metadata']['name']} {container['name']}"
            assert {"cpu", "memory"} <= set(resources["requests"]), what
            assert {"cpu", "memory"} <= set(resources["limits"]), what


@pytest.mark.parametrize("case", CASES)
def test_the_deployments_containers_have_startup_readiness_and_liveness_probes(case):
    spec = pod_spec(one(objects_for(case), "Deployment"))

    for container in containers(spec):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"].startswith("/health/"), (container["name"], probe)
    app = spec["containers"][0]
    assert app["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "admin"}


SECRET_WORDS = re.compile(r"(password|passwd|secret_access_key|token)\s*:\s*\S", re.IGNORECASE)
URL_WITH_CREDENTIALS = re.compile(r"[a-z]+://[^/\s:@]+:[^/\s@]+@")


@pytest.mark.parametrize("case", CASES)
def test_no_configmap_or_environment_value_holds_a_secret(case):
    objects = objects_for(case)

    for configmap in of_kind(objects, "ConfigMap"):
        for key, text in configmap.get("data", {}).items():
            if key.endswith(".json"):
                continue
            assert not SECRET_WORDS.search(text), (configmap["metadata"]["name"], key)
            assert not URL_WITH_CREDENTIALS.search(text), (configmap["metadata"]["name"], key)
    for obj, spec in workloads(objects):
        for container in containers(spec):
            for variable in container.get("env", []):
                value = variable.get("value", "")
                assert not URL_WITH_CREDENTIALS.search(value), (container["name"], variable["name"])
                if variable["name"] in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY"):
                    assert "secretKeyRef" in variable["valueFrom"], variable


@pytest.mark.parametrize("case", CASES)
def test_every_image_is_pinned_to_a_version(case):
    for obj, spec in workloads(objects_for(case)):
        for container in containers(spec):
            image = container["image"]
            name, _, tag = image.split("@")[0].rpartition(":")
            assert name and tag and "/" not in tag, image
            assert tag != "latest", image


@pytest.mark.parametrize("case", CASES)
def test_labels_and_selectors_agree(case):
    objects = objects_for(case)
    deployment = one(objects, "Deployment")
    pod_labels = pod_template_labels(deployment)

    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "todo-backend", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE, obj["metadata"]["name"]
    assert matches(deployment["spec"]["selector"], pod_labels)
    service = one(objects, "Service")
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
    for kind in ("PodDisruptionBudget",):
        for obj in of_kind(objects, kind):
            assert matches(obj["spec"]["selector"], pod_labels), kind
    for obj in of_kind(objects, "HorizontalPodAutoscaler"):
        assert obj["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    for monitor in of_kind(objects, "ServiceMonitor"):
        assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
        service_ports = {port["name"] for port in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    for constraint in pod_spec(deployment).get("topologySpreadConstraints", []):
        assert matches(constraint["labelSelector"], pod_labels)
    # The Deployment's selector must not catch the Jobs' pods.
    for obj, _ in workloads(objects):
        if obj is not deployment and obj["kind"] != "Pod":
            assert not matches(deployment["spec"]["selector"], pod_template_labels(obj)), obj["metadata"]["name"]


def shutdown_budget(objects) -> int:
    """What the pod's shutdown may take, from what the chart rendered: the
    app's readiness delay and in-flight timeout (its production.yaml, else
    the compiled-in configuration/base.yaml), the preStop sleep, and the
    sidecar's log drain (its sidecar.yaml)."""
    base = yaml.safe_load((REPO_ROOT / "configuration" / "base.yaml").read_text())["server"]
    server = {**base, **config_file(objects, "app", "production.yaml").get("server", {})}
    drain = config_file(objects, "sidecar", "sidecar.yaml")["logship"]["drain_timeout_seconds"]
    app = pod_spec(one(objects, "Deployment"))["containers"][0]
    prestop = app.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    return server["shutdown_readiness_delay_seconds"] + server["shutdown_timeout_seconds"] + drain + prestop


@pytest.mark.parametrize("case", CASES)
def test_the_grace_period_covers_the_apps_shutdown_and_the_sidecars_log_drain(case):
    objects = objects_for(case)

    grace = pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"]

    assert grace >= shutdown_budget(objects)


def test_the_grace_period_follows_the_drain_and_the_prestop_sleep_as_rendered():
    objects = render_objects({"sidecar": {"drainTimeoutSeconds": 45}, "app": {"preStopSleepSeconds": 7}})

    grace = pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"]

    assert config_file(objects, "sidecar", "sidecar.yaml")["logship"]["drain_timeout_seconds"] == 45
    assert shutdown_budget(objects) == 5 + 30 + 45 + 7
    assert grace == shutdown_budget(objects) + 5


def test_a_longer_shutdown_timeout_lengthens_the_grace_period():
    values = {"app": {"config": {"server": {"shutdown_timeout_seconds": 100}}}, "sidecar": {"drainTimeoutSeconds": 40}}
    objects = render_objects(values)

    grace = pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"]

    assert grace == 5 + 100 + 40 + 5


def port_allowed(rules, port) -> bool:
    for rule in rules:
        for allowed in rule.get("ports", []):
            if allowed.get("port") in (port["name"], port["containerPort"]):
                return True
    return False


def network_policy_cases():
    return [c for c in CASES if values_for(VALUES_FILES[c]).get("networkPolicy", {}).get("enabled")]


@pytest.mark.parametrize("case", network_policy_cases())
def test_the_network_policy_covers_every_port_the_pod_opens(case):
    objects = objects_for(case)
    deployment = one(objects, "Deployment")
    pod_labels = pod_template_labels(deployment)
    policies = [p for p in of_kind(objects, "NetworkPolicy") if matches(p["spec"]["podSelector"], pod_labels)]

    assert len(policies) == 1
    policy = policies[0]["spec"]
    assert policy["policyTypes"] == chart_values(VALUES_FILES[case])["networkPolicy"]["policyTypes"]
    for container in containers(pod_spec(deployment)):
        for port in container.get("ports", []):
            assert port_allowed(policy["ingress"], port), port
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert {53, 5432} <= egress_ports
    for obj, _ in workloads(objects):
        if obj["kind"] in ("Job", "CronJob"):
            assert any(
                matches(p["spec"]["podSelector"], pod_template_labels(obj)) for p in of_kind(objects, "NetworkPolicy")
            ), obj["metadata"]["name"]


# Where the chart's rendered configuration sends traffic out of the pod, read
# back from the manifests (not from the chart's helper that makes the rules):
# (networkPolicy.endpoints key, URL) per workload.
TRACE_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def outbound_endpoints(objects, obj, spec) -> list[tuple[str, str]]:
    sidecar = config_file(objects, "sidecar", "sidecar.yaml")
    found = []
    if obj["kind"] == "Deployment":
        for name, sink in sidecar.get("logship", {}).get("sinks", {}).items():
            if sink.get("url"):
                found.append((name, sink["url"]))
        remote_write = sidecar.get("aggregate", {}).get("remote_write", {}).get("url")
        if remote_write:
            found.append(("remoteWrite", remote_write))
        for container in containers(spec):
            for variable in container.get("env", []):
                if variable["name"] in TRACE_VARIABLES and variable.get("value"):
                    found.append(("tracing", variable["value"]))
    store = sidecar.get("backup", {}).get("store", {})
    runs_sidecar = any(c["name"] == "todo-sidecar" for c in containers(spec))
    if runs_sidecar and store.get("kind") == "s3" and (obj["kind"] != "Deployment" or sidecar["backup"]["enabled"]):
        found.append(("s3", store.get("endpoint") or f"https://s3.{store['region']}.amazonaws.com"))
    return found


def destination_port(values, name: str, url: str) -> int:
    """The port the destination pods listen on: what the values declare, else the URL's."""
    declared = values["networkPolicy"]["endpoints"][name]["port"]
    if declared:
        return declared
    parts = urllib.parse.urlsplit(url)
    return parts.port or {"http": 80, "https": 443}[parts.scheme]


def egress_allows(policies, port: int) -> bool:
    """Whether the policies that select a pod let it connect to `port` over TCP."""
    restricting = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    if not restricting:
        return True
    for policy in restricting:
        for rule in policy["spec"].get("egress", []):
            if not rule.get("ports"):
                return True
            for allowed in rule["ports"]:
                if allowed.get("protocol", "TCP") == "TCP" and allowed.get("port") is None:
                    return True
                if allowed.get("protocol", "TCP") == "TCP" and allowed["port"] <= port <= allowed.get("endPort", allowed["port"]):
                    return True
    return False


# Every kind of endpoint at once, set the ways a user sets them: a sink over
# https without a port, remote_write, trace endpoints through the sidecar's env
# and extraEnv, and an S3-compatible store on its own port.
EVERY_ENDPOINT = {
    "networkPolicy": {"enabled": True, "endpoints": {"otlp": {"port": 14318}}},
    "logging": {"sinks": {
        "elasticsearch": {"url": "https://es.example.com"},
        "otlp": {"url": "http://otel-collector.observability:4318"},
    }},
    "sidecar": {
        "config": {"aggregate": {"remote_write": {"url": "http://prometheus.monitoring:9090/api/v1/write"}}},
        "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo.tracing:4318"},
    },
    "extraEnv": [{"name": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "value": "https://traces.example.com"}],
    "backup": {"store": {"kind": "s3", "s3": {"bucket": "b", "endpoint": "http://minio.storage:9000"}}},
    "persistence": {"enabled": False},
}
EGRESS_CASES = {**{case: VALUES_FILES[case] for case in CASES}, "every-endpoint": []}


def egress_case(case):
    if case == "every-endpoint":
        return render_objects(EVERY_ENDPOINT), chart_values([], EVERY_ENDPOINT)
    return objects_for(case), chart_values(VALUES_FILES[case])


@pytest.mark.parametrize("case", sorted(EGRESS_CASES))
def test_egress_allows_every_endpoint_the_configuration_sends_to(case):
    objects, values = egress_case(case)
    policies = of_kind(objects, "NetworkPolicy")
    checked = []

    for obj, spec in workloads(objects):
        selecting = [p for p in policies if matches(p["spec"]["podSelector"], pod_template_labels(obj))]
        for name, url in outbound_endpoints(objects, obj, spec):
            port = destination_port(values, name, url)

            assert egress_allows(selecting, port), f"{obj['kind']} {obj['metadata']['name']}: {name} on {port}"

            checked.append((obj["kind"], name, port))
    if values["networkPolicy"]["enabled"] and values["logging"]["sinks"]["loki"]["url"]:
        assert ("Deployment", "loki", values["networkPolicy"]["endpoints"]["loki"]["port"] or 80) in checked
    if case == "every-endpoint":
        assert {("Deployment", "elasticsearch", 443), ("Deployment", "otlp", 14318),
                ("Deployment", "remoteWrite", 9090), ("Deployment", "tracing", 4318),
                ("Deployment", "tracing", 443), ("Deployment", "s3", 9000), ("CronJob", "s3", 9000)} <= set(checked)


def test_an_endpoint_is_allowed_only_where_the_values_say_it_is():
    policy = one(objects_for("values-production"), "NetworkPolicy", f"{RELEASE}-todo-backend")["spec"]

    loki = [rule for rule in policy["egress"] if {"port": 8080, "protocol": "TCP"} in rule.get("ports", [])]

    assert loki == [{"ports": [{"port": 8080, "protocol": "TCP"}],
                     "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "logging"}}}]}]
    assert not [rule for rule in policy["egress"] if {"port": 80, "protocol": "TCP"} in rule.get("ports", [])], (
        "the Loki Service's port 80 is not what NetworkPolicy sees")


def test_the_jobs_reach_only_dns_the_database_and_the_s3_store():
    objects = render_objects(EVERY_ENDPOINT)
    jobs = one(objects, "NetworkPolicy", f"{RELEASE}-todo-backend-jobs")["spec"]

    ports = sorted(p["port"] for rule in jobs["egress"] for p in rule["ports"])

    assert ports == [53, 53, 5432, 9000]
    assert "ingress" not in jobs, "nothing connects to the Jobs"


def test_policy_types_without_egress_leave_egress_unrestricted():
    objects = render_objects({"networkPolicy": {"enabled": True, "policyTypes": ["Ingress"]}})

    for policy in of_kind(objects, "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert "egress" not in policy["spec"]
    assert one(objects, "NetworkPolicy", f"{RELEASE}-todo-backend")["spec"]["ingress"]


def test_policy_types_without_ingress_leave_ingress_unrestricted():
    objects = render_objects({"networkPolicy": {"enabled": True, "policyTypes": ["Egress"]}})

    for policy in of_kind(objects, "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Egress"]
        assert "ingress" not in policy["spec"]
        assert policy["spec"]["egress"]


def test_the_metrics_port_alone_is_open_to_the_monitoring_namespace():
    objects = objects_for("values-production")
    policy = one(objects, "NetworkPolicy", f"{RELEASE}-todo-backend")["spec"]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}

    sources = [rule["from"] for rule in policy["ingress"] if any(p["port"] == "sidecar-metrics" for p in rule["ports"])]
    admin = [rule for rule in policy["ingress"] if any(p["port"] == "admin" for p in rule["ports"])]

    assert sources == [[monitoring]]
    # todo-app's health port: only the helm test pod (the kubelet's probes
    # are not subject to NetworkPolicy; the ServiceMonitor scrapes metrics).
    assert [rule["from"] for rule in admin] == [[{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "todo-backend", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "test"}}}]]
    assert all(p["port"] == "admin" for rule in admin for p in rule["ports"])


def test_api_clients_in_other_namespaces_are_allowed_when_a_namespace_selector_is_given():
    frontend = {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}
    clients = {"matchLabels": {"app": "todo-frontend"}}

    def api_sources(values):
        policy = one(render_objects(values), "NetworkPolicy", f"{RELEASE}-todo-backend")["spec"]
        return next(rule["from"] for rule in policy["ingress"] if rule["ports"][0]["port"] == "http")

    default = api_sources({"networkPolicy": {"enabled": True}})
    wider = api_sources({"networkPolicy": {"enabled": True, "allowedClientNamespaceSelector": frontend}})

    assert {"podSelector": clients} in default
    assert not any("namespaceSelector" in peer and "podSelector" in peer for peer in default)
    assert wider == default + [{"namespaceSelector": frontend, "podSelector": clients}]


def test_the_backup_volume_is_kept_when_the_release_is_uninstalled():
    claim = one(objects_for("values-production"), "PersistentVolumeClaim")

    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_the_migration_job_runs_before_install_and_upgrade_with_its_own_configuration():
    objects = objects_for("values-production")
    job = one(objects, "Job")
    hook_configmap = one(objects, "ConfigMap", f"{RELEASE}-todo-backend-migration")
    regular = one(objects, "ConfigMap", f"{RELEASE}-todo-backend-app")

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_configmap["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert hook_configmap["data"]["production.yaml"].strip() in regular["data"]["production.yaml"]
    assert "serviceAccountName" not in pod_spec(job), "hooks run before the release's ServiceAccount exists"
    assert pod_spec(job)["containers"][0]["command"] == ["/usr/local/bin/todo-app", "migrate"]
    assert job["spec"]["backoffLimit"] >= 1


def test_the_backup_cronjobs_take_one_backup_at_a_time_and_a_weekly_restore_drill():
    objects = objects_for("values-production")
    backup = one(objects, "CronJob", f"{RELEASE}-todo-backend-backup")
    drill = one(objects, "CronJob", f"{RELEASE}-todo-backend-restore-drill")

    for cronjob in (backup, drill):
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert cronjob["spec"]["startingDeadlineSeconds"] > 0
        volumes = {v["name"]: v for v in pod_spec(cronjob)["volumes"]}
        assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-todo-backend-backups"
    assert pod_spec(backup)["containers"][0]["command"] == ["/usr/local/bin/todo-sidecar", "backup", "run"]
    assert pod_spec(drill)["containers"][0]["command"] == [
        "/usr/local/bin/todo-sidecar", "backup", "verify", "--latest", "--restore-drill"]
    assert drill["spec"]["schedule"].split()[4] != "*", "weekly"


def test_s3_backups_use_the_pods_identity_and_no_static_keys():
    objects = objects_for("s3-backups")
    sidecar = config_file(objects, "sidecar", "sidecar.yaml")
    account = one(objects, "ServiceAccount")

    assert sidecar["backup"]["store"]["kind"] == "s3"
    assert sidecar["backup"]["store"]["bucket"] == "todo-backups-prod"
    assert "access_key_id_file" not in sidecar["backup"]["store"]
    assert sidecar["backup"]["enabled"] is True, "the pods' sidecars report the bucket's snapshots"
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    assert not of_kind(objects, "PersistentVolumeClaim")
    for obj in of_kind(objects, "CronJob"):
        assert pod_spec(obj)["serviceAccountName"] == account["metadata"]["name"]


def test_the_service_monitor_scrapes_the_sidecars_aggregated_endpoint():
    objects = objects_for("monitoring")

    monitor = one(objects, "ServiceMonitor")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{
        "port": "sidecar-metrics", "path": "/metrics", "scheme": "http",
        "interval": "30s", "scrapeTimeout": "10s", "honorLabels": False}]


def test_tls_in_the_pod_mounts_the_certificate_that_cert_manager_issues():
    objects = objects_for("tls-in-pod")
    certificate = one(objects, "Certificate")
    app_config = config_file(objects, "app", "production.yaml")
    spec = pod_spec(one(objects, "Deployment"))

    assert certificate["spec"]["secretName"] == "todo-backend-api-tls"
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "internal-ca"}
    assert app_config["tls"] == {"cert_path": "/etc/todo-app/tls/tls.crt", "key_path": "/etc/todo-app/tls/tls.key"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["app-tls"]["secret"]["secretName"] == "todo-backend-api-tls"


def test_velero_backs_up_the_namespace_after_a_fresh_snapshot_and_quotas_cap_it():
    objects = objects_for("velero-and-quotas")
    schedule = one(objects, "Schedule")
    deployment = one(objects, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    spec = pod_spec(deployment)

    assert schedule["apiVersion"] == "velero.io/v1"
    assert schedule["metadata"]["namespace"] == "velero"
    assert schedule["spec"]["template"]["includedNamespaces"] == ["todo"]
    assert annotations["pre.hook.backup.velero.io/container"] == "todo-sidecar"
    assert yaml.safe_load(annotations["pre.hook.backup.velero.io/command"]) == [
        "/usr/local/bin/todo-sidecar", "backup", "run"]
    sidecar_mounts = {m["name"] for m in spec["initContainers"][0]["volumeMounts"]}
    assert "backups" in sidecar_mounts, "the hook writes into the volume Velero captures"
    assert one(objects, "ResourceQuota")["spec"]["hard"]["pods"] == "40"
    assert one(objects, "LimitRange")
    assert spec["priorityClassName"] == "todo-backend"
    assert spec["tolerations"][0]["key"] == "spot"


def test_the_helm_test_pod_checks_readiness_through_the_service():
    objects = objects_for("defaults")
    pod = one(objects, "Pod")
    service = one(objects, "Service")

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"][-1] == (
        f"http://{service['metadata']['name']}:9000/health/ready")


def quantity(text) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores or bytes)."""
    text = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_the_quota_admits_the_largest_deployment_with_a_surge_pod_and_the_jobs():
    values = values_for(VALUES_FILES["velero-and-quotas"], {"autoscaling": {"enabled": True}})
    objects = render_objects(values)
    hard = one(objects, "ResourceQuota")["spec"]["hard"]
    # The chart's default maxReplicas, plus the rolling update's surge pod.
    pods = values_for(["values.yaml"], values)["autoscaling"]["maxReplicas"] + 1
    deployment = pod_spec(one(objects, "Deployment"))
    jobs = [pod_spec(o) for o in of_kind(objects, "CronJob")]

    for field in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            need = pods * sum(quantity(c["resources"][field][resource]) for c in containers(deployment))
            need += sum(quantity(c["resources"][field][resource]) for spec in jobs for c in containers(spec))

            assert need <= quantity(hard[f"{field}.{resource}"]), (field, resource, need)

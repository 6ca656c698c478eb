"""Every manifest the chart renders, for every values file: valid for
Kubernetes 1.30, restricted Pod Security Standard, resources, probes, no
secret in a ConfigMap, pinned images, consistent labels and selectors, a
grace period that covers the shutdown, and a NetworkPolicy for every port."""

from __future__ import annotations

import functools
import re

import kubernetes_validate
import pytest
import yaml

from chart_support import (
    RELEASE,
    VALUES_FILES,
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
            assert "hostPath" not in volume, where
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


def shutdown_budget(objects, values) -> int:
    server = config_file(objects, "app", "production.yaml").get("server", {})
    delay = server.get("shutdown_readiness_delay_seconds", 5)
    timeout = server.get("shutdown_timeout_seconds", 30)
    drain = values.get("sidecar", {}).get("drainTimeoutSeconds", 20)
    prestop = values.get("app", {}).get("preStopSleepSeconds", 0)
    return delay + timeout + drain + prestop


@pytest.mark.parametrize("case", CASES)
def test_the_grace_period_covers_the_apps_shutdown_and_the_sidecars_log_drain(case):
    objects = objects_for(case)
    values = values_for(VALUES_FILES[case])

    grace = pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"]

    assert grace >= shutdown_budget(objects, values)


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


@pytest.mark.parametrize(
    "case", [c for c in CASES if values_for(VALUES_FILES[c]).get("networkPolicy", {}).get("enabled")]
)
def test_the_network_policy_covers_every_port_the_pod_opens(case):
    objects = objects_for(case)
    deployment = one(objects, "Deployment")
    pod_labels = pod_template_labels(deployment)
    policies = [p for p in of_kind(objects, "NetworkPolicy") if matches(p["spec"]["podSelector"], pod_labels)]

    assert len(policies) == 1
    policy = policies[0]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
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


def test_the_metrics_port_is_open_only_to_the_monitoring_namespace():
    objects = objects_for("values-production")
    policy = one(objects, "NetworkPolicy", f"{RELEASE}-todo-backend")["spec"]

    sources = [rule["from"] for rule in policy["ingress"] if any(p["port"] == "sidecar-metrics" for p in rule["ports"])]

    assert sources == [[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]]


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

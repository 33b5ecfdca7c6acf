"""The Helm chart, checked with real tools and no cluster: Helm's own engine renders it (and applies
values.schema.json), kubernetes-validate checks every rendered core object against Kubernetes' OpenAPI schemas,
jsonschema checks the values files against the chart's schema, and the rendered Deployment only sets settings
Warden reads, takes every secret from a Secret and runs locked down."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from helm_python import Chart
from helm_python.chart import lint
from helm_python.errors import HelmError

from service.runtime import catalogue
from service.runtime.ingest.clients import ingest_group
from service.runtime.settings import BUNDLED_POLICY, Settings
from streams.ingest import INPUTS
from warden import __version__

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "warden"
KUBERNETES = "1.30.0"  # the oldest minor still supported by its vendors when this was written; 1.25+ works
CRDS = {"ServiceMonitor", "PrometheusRule"}  # the Prometheus Operator's: kubernetes-validate ships no CRD schemas
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"  # issue 13's alert rules, for compose and the chart
CHART_ALERTS = CHART / "files" / "prometheus" / "alerts.yml"  # files/prometheus links to deploy/prometheus
KNOWN = {f"WARDEN_{f.upper()}" for f in Settings.model_fields}
PENDING = {"WARDEN_API_TOKENS"} - KNOWN  # issue 13's incident API: the chart wires it before the setting lands
SECRET_SETTINGS = {"WARDEN_DATABASE_URL", "WARDEN_SEAL_KEY", "WARDEN_SLACK_TOKEN", "WARDEN_SLACK_SIGNING_SECRET",
                   "WARDEN_API_TOKENS", "WARDEN_GATEWAY_TOKENS", "WARDEN_KAFKA_SASL_PASSWORD"}
# Every setting that holds a secret, from the code: its type is SecretStr, or it is a URL that carries a password.
SECRET_FIELDS = {f"WARDEN_{name.upper()}" for name, field in Settings.model_fields.items()
                 if "SecretStr" in str(field.annotation)} | {"WARDEN_DATABASE_URL"}
# A stand-in rule group, used only while deploy/prometheus/alerts.yml has not landed (issue 13).
FIXTURE_RULES = {"groups": [{"name": "fixture", "rules": [{"alert": "Fixture", "expr": "vector(1)"}]}]}


def _values_file(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load((CHART / "ci" / name).read_text()))  # a mapping of values


def _bundled_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(BUNDLED_POLICY.glob("*.yaml"))}


def _base() -> dict[str, Any]:
    return {"kafka": {"bootstrap": "kafka:9092"}, "policy": {"files": _bundled_files()}}


def _chart(tmp_path: Path) -> Path:
    """The chart; while the alert rules have not landed, a copy of it carrying the stand-in rule group."""
    if ALERTS.exists():
        return CHART
    copied = tmp_path / "warden"
    if not copied.exists():
        shutil.copytree(CHART, copied)  # the linked folder's files become the copy's own
        (copied / CHART_ALERTS.relative_to(CHART)).write_text(yaml.safe_dump(FIXTURE_RULES))
    return copied


def _render(values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    rendered = Chart.load(chart).render(values=values, name="t", namespace="security")
    docs = [yaml.safe_load(text) for text in rendered.values() if text.strip()]
    return [d for d in docs if d]


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"]
    [container] = containers
    return container


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def _schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((CHART / "values.schema.json").read_text()))  # a JSON Schema object


# -- values and their schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["values.yaml", "ci/minimal-values.yaml", "ci/full-values.yaml"])
def test_values_files_meet_the_schema(name: str) -> None:
    """values.yaml alone misses what only the operator knows (the broker, the policy); the examples add it."""
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = defaults if name == "values.yaml" else _merge(defaults, yaml.safe_load((CHART / name).read_text()))
    errors = sorted(e.json_path for e in jsonschema.Draft7Validator(schema).iter_errors(values))
    assert errors == (["$.kafka.bootstrap", "$.policy"] if name == "values.yaml" else [])


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize(("values", "reason"), [
    ({"database": {"existingSecret": "db", "url": "postgresql+asyncpg://u:p@h/db"}}, "'/database'.*'url'"),
    ({"slack": {"token": "xoxb-1"}}, "'/slack'.*'token'"),
    ({"settings": {"WARDEN_SEAL_KEY": "k"}}, "invalid propertyName 'WARDEN_SEAL_KEY'"),
    ({"secretEnv": [{"name": "WARDEN_SLACK_TOKEN", "secret": "s", "key": "k"}]}, "'/secretEnv/0/name'"),
    ({"securityContext": {"allowPrivilegeEscalation": True, "readOnlyRootFilesystem": True,
                          "capabilities": {"drop": ["ALL"]}}}, "'/securityContext/allowPrivilegeEscalation'"),
    ({"kafka": {"bootstrap": "kafka"}}, "'/kafka/bootstrap'"),
])
def test_helm_refuses_inline_secrets_and_unsafe_values_through_the_schema(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(HelmError, match=reason):
        _render(_merge(_base(), values))


@pytest.mark.parametrize("name", ["minimal-values.yaml", "full-values.yaml"])
def test_helm_lint_strict_finds_no_warning_or_error_with_each_example(name: str, tmp_path: Path) -> None:
    report = lint(_chart(tmp_path), _values_file(name), strict=True, kube_version=f"v{KUBERNETES}")
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == []


# -- rendered manifests --------------------------------------------------------------------------------------------


def test_default_render_is_valid_kubernetes_and_holds_the_expected_objects() -> None:
    docs = _render(_base())
    _validate(docs)
    assert set(_by_kind(docs)) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}


@pytest.mark.parametrize("name", ["minimal-values.yaml", "full-values.yaml"])
def test_every_manifest_of_each_example_is_valid_kubernetes(name: str, tmp_path: Path) -> None:
    docs = _render(_values_file(name), _chart(tmp_path))
    _validate(docs)
    kinds = set(_by_kind(docs))
    if name == "full-values.yaml":
        assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Ingress",
                         "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"}
    else:
        assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}  # the policy ConfigMap is the operator's


def test_kubernetes_validate_is_real_and_rejects_a_broken_manifest() -> None:
    deployment = _by_kind(_render(_base()))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_deployment_sets_known_settings_and_reads_every_secret_from_a_secret(tmp_path: Path) -> None:
    docs = _render(_values_file("full-values.yaml"), _chart(tmp_path))
    env = {e["name"]: e for e in _container(docs)["env"]}
    warden = {n for n in env if n.startswith("WARDEN_")}
    assert warden - KNOWN - PENDING == set()
    assert warden >= SECRET_SETTINGS
    for name in SECRET_SETTINGS | {"IDP_CLIENT_SECRET", "SOAR_WEBHOOK_SECRET"}:  # the policy's env:VAR references
        assert set(env[name]) == {"name", "valueFrom"} and "secretKeyRef" in env[name]["valueFrom"], name
    assert env["WARDEN_CONTAINMENT_TIMEOUT_S"]["value"] == "15" and env["WARDEN_POLICY_RELOAD_S"]["value"] == "5"
    assert not any(d["kind"] == "Secret" for d in docs)


def test_the_policy_configmap_holds_the_files_mounted_whole_for_hot_reload() -> None:
    files = _bundled_files()
    docs = _by_kind(_render(_base()))
    assert docs["ConfigMap"]["data"] == files
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "policy"]
    assert mount == {"name": "policy", "mountPath": "/etc/warden/policy", "readOnly": True}  # no subPath: updates
    [volume] = [v for v in pod["volumes"] if v["name"] == "policy"]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert "checksum/policy" not in (pod.get("annotations") or {})  # a change is hot-reloaded, not a restart
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["WARDEN_POLICY"] == mount["mountPath"]


def test_the_example_policy_in_full_values_is_a_valid_matrix(tmp_path: Path) -> None:
    for name, body in _values_file("full-values.yaml")["policy"]["files"].items():
        (tmp_path / name).write_text(body)
    assert catalogue.load(tmp_path).sha256


def test_the_pod_runs_as_non_root_on_a_read_only_root_with_no_privilege_and_writable_data_and_tmp() -> None:
    docs = _by_kind(_render(_base()))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/data", "/tmp"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WARDEN_DATA_DIR"] == "/data"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    probes = {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    # liveness (and start-up) on the cheap /healthz; readiness on /readyz, which checks broker, group and database
    assert probes == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


def test_the_service_serves_the_container_port_and_the_monitors_select_it(tmp_path: Path) -> None:
    docs = _by_kind(_render(_values_file("full-values.yaml"), _chart(tmp_path)))
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    [port] = container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Settings(web_bind=env["WARDEN_WEB_BIND"]).web_port == port["containerPort"]
    service = docs["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"].items() <= docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    monitor = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s",
                                             "relabelings": [{"targetLabel": "job", "replacement": "warden"}]}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    ingress = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"]
    assert [p["path"] for p in ingress] == ["/slack/interactions"]
    assert ingress[0]["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}


def test_the_hpa_scales_the_deployment_on_cpu_and_lag_and_never_past_the_partitions(tmp_path: Path) -> None:
    values = _values_file("full-values.yaml")
    docs = _by_kind(_render(values, _chart(tmp_path)))
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert "replicas" not in docs["Deployment"]["spec"]  # the HPA owns the count
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "External"}
    assert hpa["maxReplicas"] == values["topics"]["partitions"]
    too_many = _merge(values, {"autoscaling": {"maxReplicas": values["topics"]["partitions"] + 1}})
    with pytest.raises(HelmError, match="partitions"):
        _render(too_many, _chart(tmp_path))
    with pytest.raises(HelmError, match="partitions"):
        _render(_merge(_base(), {"replicaCount": 13}))


def test_the_pdb_selects_the_workers_and_lets_one_go_at_a_time() -> None:
    docs = _by_kind(_render(_base()))
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_prometheus_rule_carries_the_rule_file_groups_unchanged(tmp_path: Path) -> None:
    chart = _chart(tmp_path)
    docs = _by_kind(_render(_merge(_base(), {"prometheusRule": {"enabled": True}}), chart))
    rule = docs["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load((chart / CHART_ALERTS.relative_to(CHART)).read_text())["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and all(("alert" in r or "record" in r) and r["expr"] for r in group["rules"])


def test_the_chart_reads_the_alert_rules_from_the_folder_compose_mounts() -> None:
    """One rule file for compose's Prometheus and the chart's PrometheusRule: the chart links the folder."""
    link = CHART_ALERTS.parent
    assert link.is_symlink() and link.resolve() == ALERTS.parent.resolve()
    prometheus = yaml.safe_load((ALERTS.parent / "prometheus.yml").read_text())
    assert [Path(f).name for f in prometheus["rule_files"]] == [ALERTS.name]


def test_the_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    container = _container(_render(_base()))
    assert container["image"].endswith(f":{__version__}") and container["args"] == ["run"]


# -- the chart as it works once rendered (issue 30) ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_the_schema_refuses_every_secret_setting_in_settings(name: str) -> None:
    """Each setting whose value is a secret can only come from a Secret: `settings` would inline it."""
    assert name in _schema()["properties"]["settings"]["propertyNames"]["not"]["enum"]
    with pytest.raises(HelmError, match=f"invalid propertyName '{name}'"):
        _render(_merge(_base(), {"settings": {name: "inline-secret-value"}}))


def _jobs(expr: str) -> set[str]:
    promql_parser.parse(expr)  # every rendered expression is still PromQL
    return set(re.findall(r'\bjob\s*=\s*"([^"]*)"', expr))


@pytest.mark.parametrize("job", ["warden", "warden-prod"])
def test_the_alert_rules_select_the_job_the_service_monitor_produces(job: str, tmp_path: Path) -> None:
    values = _merge(_base(), {"serviceMonitor": {"enabled": True, "jobName": job},
                              "prometheusRule": {"enabled": True}})
    docs = _by_kind(_render(values, _chart(tmp_path)))
    [endpoint] = docs["ServiceMonitor"]["spec"]["endpoints"]
    produced = {r["replacement"] for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"}
    assert produced == {job}, "without a job relabeling the Operator names the job after the Service"
    selected = set().union(*(_jobs(r["expr"]) for g in docs["PrometheusRule"]["spec"]["groups"] for r in g["rules"]))
    assert selected == {job}


def test_promtool_tests_pass_on_the_rendered_rules_with_the_rendered_job(tmp_path: Path) -> None:
    """deploy/prometheus/alerts.test.yml, its series relabelled with the chart's job, against the chart's rules."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package for it")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    job = "warden-prod"
    values = _merge(_base(), {"serviceMonitor": {"enabled": True, "jobName": job}, "prometheusRule": {"enabled": True}})
    rule = _by_kind(_render(values, _chart(tmp_path)))["PrometheusRule"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    tests = (ALERTS.parent / "alerts.test.yml").read_text()
    assert 'job="warden"' in tests
    (tmp_path / "alerts.test.yml").write_text(tests.replace('job="warden"', f'job="{job}"'))
    out = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_the_lag_autoscaler_watches_the_group_and_topic_the_worker_reads(tmp_path: Path) -> None:
    values = _merge(_values_file("full-values.yaml"), {"appId": "warden-eu"})
    docs = _by_kind(_render(values, _chart(tmp_path)))
    env = {e["name"]: e.get("value") for e in _container(list(docs.values()))["env"]}
    [lag] = [m for m in docs["HorizontalPodAutoscaler"]["spec"]["metrics"] if m["type"] == "External"]
    selector = lag["external"]["metric"]["selector"]["matchLabels"]
    assert selector["consumergroup"] == ingest_group(env["WARDEN_APP_ID"]) == "warden-eu.ingest"
    assert selector["topic"] == env["WARDEN_TOPIC_ACTIVITY"]


def test_the_charts_input_topics_are_the_registrys_and_each_reaches_its_setting(tmp_path: Path) -> None:
    """The chart cannot import Python: its `topics.inputs` lists the live inputs of streams.ingest.INPUTS, with
    their default topics, and each becomes the WARDEN_TOPIC_<NAME> setting the worker reads."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["topics"]["inputs"]
    assert defaults == {name: live.topic for name, live in INPUTS.items()}
    renamed = {name: f"eu.{name}" for name in defaults}
    docs = _render(_merge(_base(), {"topics": {"inputs": renamed}}), _chart(tmp_path))
    env = {e["name"]: e.get("value") for e in _container(docs)["env"]}
    assert {n: v for n, v in env.items() if n.removeprefix("WARDEN_TOPIC_").lower() in INPUTS} == {
        f"WARDEN_TOPIC_{name.upper()}": topic for name, topic in renamed.items()}
    topics: dict[str, Any] = {f"topic_{name}": topic for name, topic in renamed.items()}
    assert Settings(**topics).input_topics() == renamed
    with pytest.raises(HelmError, match=r"an input topic; set it in topics\.inputs"):
        _render(_merge(_base(), {"topics": {"inputs": {"spans_eu": "eu.spans"}},
                                 "settings": {"WARDEN_TOPIC_SPANS_EU": "elsewhere"}}), _chart(tmp_path))


def test_secured_kafka_reaches_the_worker_from_a_secret_and_a_mounted_ca(tmp_path: Path) -> None:
    values = _merge(_base(), {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {
        "mechanism": "SCRAM-SHA-512", "username": "warden", "existingSecret": "kafka-credentials"},
        "tls": {"existingSecret": "kafka-ca", "caKey": "ca.crt"}}})
    docs = _render(values, _chart(tmp_path))
    _validate(docs)
    container = _container(docs)
    env = {e["name"]: e for e in container["env"]}
    assert env["WARDEN_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["WARDEN_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["WARDEN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials",
                                                                               "key": "password"}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "kafka-tls"]
    assert env["WARDEN_KAFKA_SSL_CAFILE"]["value"] == f"{mount['mountPath']}/ca.crt" and mount["readOnly"]
    settings = {k: v["value"] for k, v in env.items() if k.startswith("WARDEN_KAFKA_") and "value" in v}
    assert set(settings) <= KNOWN
    oauth = _merge(values, {"kafka": {"sasl": {"mechanism": "OAUTHBEARER", "oauth": {
        "tokenUrl": "https://idp.example/token", "clientId": "warden"}}}})
    env = {e["name"]: e for e in _container(_render(oauth, _chart(tmp_path)))["env"]}
    assert "secretKeyRef" in env["WARDEN_KAFKA_OAUTH_CLIENT_SECRET"]["valueFrom"]
    assert env["WARDEN_KAFKA_OAUTH_TOKEN_URL"]["value"] == "https://idp.example/token"
    with pytest.raises(HelmError, match=r"sasl\.existingSecret is required"):
        _render(_merge(_base(), {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}}))

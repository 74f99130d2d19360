"""The Helm chart: linted and rendered by the real Helm engine for every ci/*-values.yaml,
its manifests validated against the Kubernetes API schemas, its rules and dashboard compared
with the repository's alerts/ and grafana/ files, its config checked by the exporter's own
`validate` command.

Helm is the `helm` binary where one is installed, else the Helm library that the
helm-python-sdk package binds (the same Go code, no cluster needed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .peers import missing

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "illiad-port-exporter"
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yml"))
DASHBOARDS = sorted((REPO / "grafana").glob("*.json"))
NAMESPACE = "illiad"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest with schemas.
KUBE_VERSIONS = ("1.25.0", None)
CRD_GROUP = "monitoring.coreos.com/v1"


# -- the Helm engine ---------------------------------------------------------------------


class Helm:
    """lint, template and package through the helm binary or the helm-python-sdk library."""

    def __init__(self) -> None:
        self.binary = shutil.which("helm")
        self.sdk: Any = None
        if self.binary is None:
            try:
                import helm_python
            except ImportError:
                missing("Helm: neither a helm binary nor the helm-python-sdk package (test extras)")
            self.sdk = helm_python

    def lint(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """Findings of a strict lint: [{severity: info|warning|error, path, message}]."""
        if self.sdk is not None:
            report = self.sdk.lint(CHART, values, strict=True)
            names = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
            return [{"severity": names[m["severity"]], "path": m["path"], "message": m["error"]}
                    for m in report["messages"]]
        proc = self._run("lint", "--strict", str(CHART), values=values, check=False)
        findings = []
        for line in proc.stdout.splitlines():
            if line.startswith("[") and "]" in line:
                severity, rest = line[1:].split("]", 1)
                findings.append({"severity": severity.lower(), "path": "", "message": rest.strip()})
        if proc.returncode != 0 and not any(f["severity"] == "error" for f in findings):
            findings.append({"severity": "error", "path": "", "message": proc.stdout + proc.stderr})
        return findings

    def template(self, values: dict[str, Any], *, release: str = "web", chart: Path = CHART) -> list[dict[str, Any]]:
        """The rendered manifests (documents that are not empty), as `helm install` would send them."""
        if self.sdk is not None:
            with self.sdk.Chart.load(chart) as loaded:
                loaded.validate_schema(values)
                rendered = loaded.render(values, name=release, namespace=NAMESPACE, is_install=True)
            texts = [text for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")]
        else:
            texts = [self._run("template", release, str(chart), "--namespace", NAMESPACE, values=values).stdout]
        return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]

    def package(self, destination: Path) -> Path:
        if self.sdk is not None:
            return Path(self.sdk.package(CHART, destination=destination))
        out = self._run("package", str(CHART), "--destination", str(destination), values=None).stdout
        return Path(out.strip().rsplit(": ", 1)[-1])

    def _run(self, *args: str, values: dict[str, Any] | None, check: bool = True) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory() as tmp:
            extra = []
            if values is not None:
                (Path(tmp) / "values.yaml").write_text(yaml.safe_dump(values))
                extra = ["--values", str(Path(tmp) / "values.yaml")]
            proc = subprocess.run([self.binary, *args, *extra], capture_output=True, text=True,  # type: ignore[list-item]
                                  timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {args[0]} exited {proc.returncode}: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm()


def scenario_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    return {name: helm.template(scenario_values(name)) for name in SCENARIOS}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} in {[d['kind'] for d in docs]}"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
    assert len(found) == 1
    return found[0]


def test_ci_scenarios_cover_each_optional_piece() -> None:
    """The scenarios the tests render include the default, a DaemonSet, the monitoring
    objects, an existing Secret, a NetworkPolicy, a web config, a Probe and shards."""
    assert {"default", "daemonset", "monitoring", "existing-secret", "networkpolicy", "webconfig", "probe",
            "shards"} <= set(SCENARIOS)


# -- lint and schema ---------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_clean_in_strict_mode(helm: Helm, scenario: str) -> None:
    """`helm lint --strict` finds no warning or error for the scenario's values."""
    findings = helm.lint(scenario_values(scenario))
    serious = [f for f in findings if f["severity"] in ("warning", "error", "unknown")]
    assert serious == []


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS, ids=lambda v: v or "latest")
def test_rendered_manifests_are_valid_kubernetes_objects(rendered: dict[str, list[dict[str, Any]]], scenario: str,
                                                         kube_version: str | None) -> None:
    """Every built-in object validates against the Kubernetes API schema (unknown fields
    rejected); the prometheus-operator objects have the shape their CRDs require."""
    import kubernetes_validate

    version = kube_version or kubernetes_validate.latest_version()
    docs = rendered[scenario]
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE or doc["kind"] in ("ServiceMonitor", "PrometheusRule", "Probe")
        if doc["apiVersion"] == CRD_GROUP:
            check_operator_object(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def check_operator_object(doc: dict[str, Any]) -> None:
    """The fields prometheus-operator's ServiceMonitor, Probe and PrometheusRule CRDs require,
    with their types (the CRDs are not in kubernetes-validate's schemas)."""
    assert doc["kind"] in ("ServiceMonitor", "PrometheusRule", "Probe")
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert isinstance(doc["metadata"]["name"], str) and doc["metadata"]["name"]
    assert all(isinstance(v, str) for v in doc["metadata"]["labels"].values())
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        assert isinstance(spec["selector"]["matchLabels"], dict) and spec["selector"]["matchLabels"]
        assert spec["endpoints"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "scheme", "path", "interval", "scrapeTimeout", "params", "relabelings",
                                     "metricRelabelings", "tlsConfig", "basicAuth"}
            assert endpoint["scheme"] in ("http", "https")
            assert endpoint["port"] == "http-metrics"
            assert endpoint["path"] in ("/metrics", "/probe")
            for key in ("interval", "scrapeTimeout"):
                assert isinstance(endpoint[key], str) and endpoint[key][-1] in "smh"
            for values in (endpoint.get("params") or {}).values():
                assert isinstance(values, list) and all(isinstance(v, str) for v in values)
    elif doc["kind"] == "Probe":
        assert set(spec) <= {"jobName", "prober", "interval", "scrapeTimeout", "targets", "metricRelabelings",
                             "tlsConfig", "basicAuth"}
        assert set(spec["prober"]) == {"url", "path", "scheme"} and spec["prober"]["path"] == "/probe"
        static = spec["targets"]["staticConfig"]
        assert static["static"] and all(isinstance(t, str) for t in static["static"])
        for key in ("interval", "scrapeTimeout"):
            assert isinstance(spec[key], str) and spec[key][-1] in "smh"
    else:
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
            assert isinstance(group["name"], str) and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule)
                assert isinstance(rule["expr"], str) and rule["expr"]
                assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
                for key in ("labels", "annotations"):
                    assert all(isinstance(v, str) for v in (rule.get(key) or {}).values())


def test_values_schema_rejects_an_unknown_vantage(helm: Helm) -> None:
    """values.schema.json stops a release whose vantage is not an ILLiad role."""
    with pytest.raises(Exception, match="vantage"):
        helm.template({"vantage": "librarian"})


def test_values_schema_rejects_a_misspelt_value(helm: Helm) -> None:
    """A key the chart does not know (a typo) is refused rather than silently ignored."""
    with pytest.raises(Exception, match="serviceMonitr"):
        helm.template({"serviceMonitr": {"enabled": True}})


def schema_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The keys the schema closes (objects without additional properties), as paths."""
    for key, child in node.get("properties", {}).items():
        if key == "global":
            continue
        yield prefix + (key,)
        if child.get("additionalProperties") is False:
            yield from schema_paths(child, prefix + (key,))


def test_every_value_is_in_the_schema_and_documented_by_a_comment() -> None:
    """values.yaml and values.schema.json name the same keys, and a comment line stands
    directly above each of them in values.yaml."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    expected = set(schema_paths(schema))
    seen: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, stripped.split(":", 1)[0]))
            path = tuple(key for _, key in stack)
            if path in expected:
                seen[path] = previous.startswith("#")
        previous = stripped
    assert set(seen) == expected
    assert [".".join(p) for p, documented in seen.items() if not documented] == []


# -- what the objects say ------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_workload_is_hardened_and_probed(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities,
    RuntimeDefault seccomp, resources, and probes on /-/healthy and /-/ready."""
    pod = workload(rendered[scenario])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    if scenario_values(scenario).get("webConfig", {}).get("existingSecret"):
        # kubelet's httpGet cannot speak the web config's TLS or credentials: the healthcheck can
        for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
            assert "httpGet" not in container[probe]
            assert container[probe]["exec"]["command"] == ["illiad-exporter", "healthcheck", "--address=:9968",
                                                           f"--path={path}"]
    else:
        assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http-metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http-metrics"}
    assert container["ports"] == [{"name": "http-metrics", "containerPort": 9968, "protocol": "TCP"}]
    vantage = scenario_values(scenario).get("vantage", "web_server")
    assert {"name": "ILLIAD_EXPORTER_VANTAGE", "value": vantage} in container["env"]
    assert container["args"][:2] == ["serve", "--config.file=/etc/illiad-exporter/illiad.yml"]


def config_text(docs: list[dict[str, Any]]) -> str:
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if "illiad.yml" in d["data"]]
    return configmap["data"]["illiad.yml"]  # type: ignore[no-any-return]


@pytest.mark.process  # the exporter's validate command
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "existing-secret"])
def test_rendered_config_passes_the_exporters_validate(rendered: dict[str, list[dict[str, Any]]], scenario: str,
                                                      tmp_path: Path) -> None:
    """The ConfigMap's illiad.yml, exactly as mounted, is a config `illiad-exporter validate`
    accepts, and the pod mounts that ConfigMap at the path its args name."""
    docs = rendered[scenario]
    config = tmp_path / "illiad.yml"
    config.write_text(config_text(docs))
    proc = subprocess.run([sys.executable, "-m", "illiad_exporter", "validate", "--config.file", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{config}: valid;" in proc.stdout
    template = workload(docs)["spec"]["template"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "config"]
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if "illiad.yml" in d["data"]]
    assert volume["configMap"] == {"name": configmap["metadata"]["name"]}
    assert len(template["metadata"]["annotations"]["checksum/config"]) == 64  # a changed config rolls the pods


@pytest.mark.process
def test_invalid_config_values_are_caught_by_validate(helm: Helm, tmp_path: Path) -> None:
    """A typo in the config values renders (Helm does not know the exporter's schema), and
    `illiad-exporter validate` on the rendered file names the key: the check above can fail."""
    docs = helm.template({"config": {"sites": [{"name": "x", "hosts": {"web_server": "a"},
                                                "paths": {"sql": {"port": 70000}}}]}})
    config = tmp_path / "illiad.yml"
    config.write_text(config_text(docs))
    proc = subprocess.run([sys.executable, "-m", "illiad_exporter", "validate", "--config.file", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "sites[0].paths.sql.port: Input should be less than or equal to 65535" in proc.stderr


def test_existing_secret_replaces_the_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """With existingSecret the chart renders no config ConfigMap and mounts the Secret's key."""
    docs = rendered["existing-secret"]
    values = scenario_values("existing-secret")
    assert by_kind(docs, "ConfigMap") == []
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    key = values["existingSecretKey"]
    assert volume["secret"] == {"secretName": values["existingSecret"], "items": [{"key": key, "path": key}]}
    assert f"--config.file=/etc/illiad-exporter/{key}" in pod["containers"][0]["args"]
    assert values["extraEnv"][0] in pod["containers"][0]["env"]


def test_daemonset_option_renders_a_daemonset_on_the_node_network(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """kind: DaemonSet gives a DaemonSet (no replicas), here on the node's network."""
    docs = rendered["daemonset"]
    assert by_kind(docs, "Deployment") == []
    daemonset = one(docs, "DaemonSet")
    assert "replicas" not in daemonset["spec"]
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert one(rendered["default"], "Deployment")["spec"]["replicas"] == 1


def test_shards_render_a_statefulset_whose_pods_take_their_shard_from_their_index(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """`shards: 3`: a StatefulSet of 3 pods, pod i run with --shard i/3 (its index label), and
    a ServiceMonitor that scrapes every pod's /metrics and labels it with its shard.
    tests/test_shard.py runs these pods as real exporters."""
    docs = rendered["shards"]
    statefulset = one(docs, "StatefulSet")
    assert not by_kind(docs, "Deployment")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == one(docs, "Service")["metadata"]["name"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert "--shard=$(SHARD_INDEX)/3" in container["args"]
    assert {"name": "SHARD_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}} in container["env"]
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index"],
            "targetLabel": "shard"} in endpoint["relabelings"]
    assert "--shard" not in " ".join(workload(rendered["default"])["spec"]["template"]["spec"]["containers"][0]["args"])


def test_service_selects_the_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    service = one(docs, "Service")
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http-metrics", "port": 9968, "targetPort": "http-metrics",
                                         "protocol": "TCP"}]


def test_default_renders_no_optional_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Without options: a Deployment, its Service, ServiceAccount and config, and the `helm
    test` pod (a hook: installed only by `helm test`), nothing more."""
    kinds = sorted(d["kind"] for d in rendered["default"])
    assert kinds == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]
    assert one(rendered["default"], "Pod")["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "probe_on_metrics" not in config_text(rendered["default"])


def test_servicemonitor_carries_the_release_label_and_one_endpoint_per_site(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """kube-prometheus-stack finds it by `release`; each site is a /probe?site= endpoint,
    plus /metrics for the exporter's own metrics; it selects the Service's labels."""
    docs = rendered["monitoring"]
    values = scenario_values("monitoring")["serviceMonitor"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == values["release"]
    endpoints = [(e["path"], e.get("params")) for e in monitor["spec"]["endpoints"]]
    assert endpoints == [("/probe", {"site": [s]}) for s in values["sites"]] + [("/metrics", None)]
    for endpoint in monitor["spec"]["endpoints"]:
        site = (endpoint.get("params") or {}).get("site", [None])[0]
        if site is None:  # /metrics: the exporter's own target
            assert "relabelings" not in endpoint
            assert endpoint["metricRelabelings"] == values["metricRelabelings"]
        else:  # each site a target of its own, its samples' site label kept once
            assert endpoint["relabelings"] == [{"targetLabel": "instance", "replacement": site},
                                               {"targetLabel": "site", "replacement": site}]
            assert endpoint["metricRelabelings"] == [{"action": "labeldrop", "regex": "exported_site"},
                                                     *values["metricRelabelings"]]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()
    # The site names the endpoints ask for are sites of the rendered config.
    sites = {s["name"] for s in yaml.safe_load(config_text(docs))["sites"]}
    assert set(values["sites"]) <= sites


def test_networkpolicy_admits_only_the_given_scrapers_and_egress(rendered: dict[str, list[dict[str, Any]]]) -> None:
    values = scenario_values("networkpolicy")["networkPolicy"]
    policy = one(rendered["networkpolicy"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http-metrics", "protocol": "TCP"}],
                                          "from": values["ingressFrom"]}]
    assert policy["spec"]["egress"] == values["egress"]
    assert by_kind(rendered["default"], "NetworkPolicy") == []


# -- one source of truth: alerts/ and grafana/ ---------------------------------------------


def rules_of(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule.get("alert") or rule["record"]: rule for group in groups for rule in group["rules"]}


def repository_groups() -> list[dict[str, Any]]:
    if not RULE_FILES:
        missing("alerts/*.rules.yml: the repository has no rule files for the PrometheusRule")
    return [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def test_prometheus_rule_holds_every_rule_of_the_alerts_directory(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The rendered PrometheusRule has each group, alert and recording rule of alerts/*.rules.yml,
    unchanged but for the release's extra rule labels (added to alerts only)."""
    expected_groups = repository_groups()
    values = scenario_values("monitoring")["prometheusRule"]
    rule = one(rendered["monitoring"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == values["release"]
    groups = rule["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in expected_groups]
    expected, got = rules_of(expected_groups), rules_of(groups)
    assert sorted(got) == sorted(expected)
    assert any("alert" in r for r in expected.values())
    extra = values["additionalRuleLabels"]
    for name, want in expected.items():
        if "alert" in want:
            want = {**want, "labels": {**extra, **(want.get("labels") or {})}}
        assert got[name] == want, name


def test_packaged_chart_carries_the_rule_files_themselves(helm: Helm, tmp_path: Path) -> None:
    """`helm package` follows files/alerts (a link to alerts/) and files/dashboards (to
    grafana/): the archive holds the files' content, not links, and not the promtool tests;
    installed from the archive, the PrometheusRule still has every rule."""
    archive = helm.package(tmp_path)
    repository_groups()
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in RULE_FILES:
            member = members[f"illiad-port-exporter/files/alerts/{path.name}"]
            assert member.isfile()
            assert tar.extractfile(member).read() == path.read_bytes()  # type: ignore[union-attr]
        for path in DASHBOARDS:
            member = members[f"illiad-port-exporter/files/dashboards/{path.name}"]
            assert tar.extractfile(member).read() == path.read_bytes()  # type: ignore[union-attr]
        assert not any(name.startswith("illiad-port-exporter/files/alerts/tests") for name in members)
        assert not any(m.issym() or m.islnk() for m in members.values())
    docs = helm.template(scenario_values("monitoring"), chart=archive)
    assert sorted(rules_of(one(docs, "PrometheusRule")["spec"]["groups"])) == sorted(rules_of(repository_groups()))


def test_dashboard_configmap_holds_the_grafana_json_for_the_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """One ConfigMap labelled grafana_dashboard: "1" whose data is grafana/*.json, byte for byte."""
    if not DASHBOARDS:
        missing("grafana/*.json: the repository has no dashboard for the chart")
    dashboards = [d for d in by_kind(rendered["monitoring"], "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == 1
    (configmap,) = dashboards
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ILLiad"}
    assert sorted(configmap["data"]) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert configmap["data"][path.name].rstrip("\n") == path.read_text().rstrip("\n")
        assert json.loads(configmap["data"][path.name])["panels"]


def test_chart_readme_installs_one_release_per_vantage() -> None:
    """The install commands of the chart README's "One release per vantage" name each ILLiad
    role once, each as its own release."""
    readme = (CHART / "README.md").read_text()
    section = readme.split("## One release per vantage", 1)[1].split("\n## ", 1)[0]
    installs = [line.split() for line in section.splitlines() if line.strip().startswith("helm install")]
    assert len({words[2] for words in installs}) == len(installs) == 3
    installs = [" ".join(words) for words in installs]
    for vantage in ("web_server", "staff_client", "external"):
        assert sum(f"vantage={vantage}" in line for line in installs) == 1, vantage


# -- sites scraped through /probe ----------------------------------------------------------


@pytest.mark.parametrize("scenario", ["monitoring", "probe", "webconfig"])
def test_sites_scraped_through_probe_turn_probe_on_metrics_off(rendered: dict[str, list[dict[str, Any]]],
                                                               scenario: str) -> None:
    """With per-site scrapes the rendered config's /metrics probes nothing (no site twice),
    the rest of the config's exporter section kept."""
    exporter_section = yaml.safe_load(config_text(rendered[scenario]))["exporter"]
    assert exporter_section["probe_on_metrics"] is False
    assert exporter_section == {**(scenario_values(scenario)["config"].get("exporter") or {}),
                                "probe_on_metrics": False}


def test_a_config_that_asks_metrics_to_probe_with_per_site_scrapes_is_refused(helm: Helm) -> None:
    values = scenario_values("monitoring")
    values["config"]["exporter"]["probe_on_metrics"] = True
    with pytest.raises(Exception, match="probe_on_metrics is true, but the sites are scraped through /probe"):
        helm.template(values)


def test_probe_passes_each_site_as_site_and_makes_it_the_instance(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The Probe object: the Service as prober, one static target per site; its relabeling
    moves the name from target= (what a Probe sends) to site= (what this exporter reads)."""
    docs = rendered["probe"]
    values = scenario_values("probe")["probe"]
    probe = one(docs, "Probe")
    assert probe["metadata"]["labels"]["release"] == values["release"]
    service = one(docs, "Service")
    assert probe["spec"]["prober"] == {"url": f"{service['metadata']['name']}.{NAMESPACE}.svc:9968",
                                       "path": "/probe", "scheme": "http"}
    static = probe["spec"]["targets"]["staticConfig"]
    assert static["static"] == values["sites"]
    assert static["relabelingConfigs"] == [
        {"sourceLabels": ["__param_target"], "targetLabel": "__param_site"},
        {"action": "labeldrop", "regex": "__param_target"},
        {"sourceLabels": ["__param_site"], "targetLabel": "site"},
    ]
    assert by_kind(docs, "ServiceMonitor") == []


def test_web_config_from_a_secret_reaches_the_pod_the_probes_and_the_scrapes(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["webconfig"]
    web = scenario_values("webconfig")["webConfig"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web-config"]
    assert volume == {"name": "web-config", "secret": {"secretName": web["existingSecret"]}}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "web-config"]
    assert mount == {"name": "web-config", "mountPath": "/etc/illiad-exporter-web", "readOnly": True}
    assert {"name": "ILLIAD_EXPORTER_WEB_CONFIG", "value": "/etc/illiad-exporter-web/web-config.yml"} in container["env"]
    for endpoint in one(docs, "ServiceMonitor")["spec"]["endpoints"]:
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == web["scrapeTlsConfig"]
        assert endpoint["basicAuth"] == {"username": {"name": web["basicAuthSecret"], "key": "username"},
                                         "password": {"name": web["basicAuthSecret"], "key": "password"}}
    for test_container in one(docs, "Pod")["spec"]["containers"]:  # helm test sends the same credentials
        names = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in test_container["env"]}
        assert names == {"ILLIAD_EXPORTER_HEALTHCHECK_USERNAME": {"name": web["basicAuthSecret"], "key": "username"},
                         "ILLIAD_EXPORTER_HEALTHCHECK_PASSWORD": {"name": web["basicAuthSecret"], "key": "password"}}
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": one(docs, "Deployment")["spec"]["selector"]}
    assert by_kind(rendered["default"], "PodDisruptionBudget") == []


@pytest.mark.parametrize("scraped_by", ["serviceMonitor", "probe"])
def test_shards_with_per_site_scrapes_are_refused(helm: Helm, scraped_by: str) -> None:
    """A shard's pod answers only for its own sites while the Service spreads the per-site
    scrapes over every pod: the chart refuses the combination instead of rendering scrapes
    that would fail on all pods but one."""
    values = scenario_values("probe" if scraped_by == "probe" else "monitoring")
    values["shards"] = 3
    with pytest.raises(Exception, match="shards cannot be combined with per-site scrapes"):
        helm.template(values)


def test_probe_workers_become_the_pods_flag_and_one_means_none(helm: Helm) -> None:
    values = scenario_values("monitoring")
    values["probeWorkers"] = 2
    (container,) = workload(helm.template(values))["spec"]["template"]["spec"]["containers"]
    assert "--probe-workers=2" in container["args"]
    values["probeWorkers"] = 1
    (container,) = workload(helm.template(values))["spec"]["template"]["spec"]["containers"]
    assert not [a for a in container["args"] if a.startswith("--probe-workers")]

"""The Prometheus scrape configs prometheus-operator generates for a ServiceMonitor and a
Probe (its config generator, ``pkg/prometheus/promcfg.go``), with Kubernetes service
discovery replaced by a static target that carries the ``__meta_kubernetes_*`` labels the
endpoints discovery would give the exporter's pod. Everything after discovery, the
operator's relabeling chain, the monitor's own relabelings and the metric relabelings,
is kept as the operator writes it, so a real Prometheus run on it scrapes as it would in a
cluster. One shard (the operator's hashmod rules with modulus 1)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# the operator's camelCase relabeling keys -> Prometheus' own
_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
         "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


def relabel(configs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """generateRelabelConfig: keys renamed, action lower-cased."""
    out = []
    for config in configs or []:
        item = {_KEYS[key]: value for key, value in config.items()}
        if "action" in item:
            item["action"] = item["action"].lower()
        out.append(item)
    return out


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _sharding(label: str) -> list[dict[str, Any]]:
    return [
        {"source_labels": [label, "__tmp_disable_sharding"], "target_label": "__tmp_hash", "regex": "(.+);",
         "replacement": "$1", "action": "replace"},
        {"source_labels": ["__tmp_hash"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"},
        {"source_labels": ["__tmp_hash", "__tmp_disable_sharding"], "regex": "0;|.+;.+", "action": "keep"},
    ]


def _http_client(spec: dict[str, Any], secrets: dict[tuple[str, str], str], files: Path | None) -> dict[str, Any]:
    """basicAuth and tlsConfig, Secret references resolved as the operator does (it writes a
    referenced CA into a file of the Prometheus pod; here into `files`)."""
    out: dict[str, Any] = {}
    if "basicAuth" in spec:
        auth = spec["basicAuth"]
        out["basic_auth"] = {"username": secrets[(auth["username"]["name"], auth["username"]["key"])],
                             "password": secrets[(auth["password"]["name"], auth["password"]["key"])]}
    if "tlsConfig" in spec:
        tls = spec["tlsConfig"]
        out["tls_config"] = {"insecure_skip_verify": bool(tls.get("insecureSkipVerify", False))}
        if "serverName" in tls:
            out["tls_config"]["server_name"] = tls["serverName"]
        if "secret" in tls.get("ca", {}):
            assert files is not None, "a CA from a Secret needs a directory to write it to"
            ref = tls["ca"]["secret"]
            path = files / f"{ref['name']}_{ref['key']}"
            path.write_text(secrets[(ref["name"], ref["key"])])
            out["tls_config"]["ca_file"] = str(path)
    return out


def service_monitor_jobs(monitor: dict[str, Any], service: dict[str, Any], *, address: str, pod: str,
                         secrets: dict[tuple[str, str], str] | None = None,
                         files: Path | None = None) -> list[dict[str, Any]]:
    """One scrape job per endpoint (generateServiceMonitorConfig), the exporter's pod at `address`."""
    namespace = monitor["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    meta = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_name": "exporter",
        "__meta_kubernetes_pod_phase": "Running",
    }
    for port in service["spec"]["ports"]:
        meta["__meta_kubernetes_endpoint_port_name"] = port["name"]
    for key, value in service["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = value
        meta[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
    jobs = []
    for index, endpoint in enumerate(monitor["spec"]["endpoints"]):
        relabelings: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
        for key in sorted(selector):
            relabelings.append({"action": "keep", "source_labels": [f"__meta_kubernetes_service_label_{_sanitize(key)}",
                                                                    f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"],
                                "regex": f"({selector[key]});true"})
        kind_and_name = ["__meta_kubernetes_endpoint_address_target_kind",
                         "__meta_kubernetes_endpoint_address_target_name"]
        relabelings += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]},
            {"source_labels": kind_and_name, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}",
             "target_label": "node"},
            {"source_labels": kind_and_name, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}",
             "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            *relabel(endpoint.get("relabelings")),
            *_sharding("__address__"),
        ]
        job: dict[str, Any] = {
            "job_name": f"serviceMonitor/{namespace}/{monitor['metadata']['name']}/{index}",
            "honor_labels": False,
            "static_configs": [{"targets": [address], "labels": meta}],
            "scrape_interval": endpoint["interval"], "scrape_timeout": endpoint["scrapeTimeout"],
            "metrics_path": endpoint["path"], "scheme": endpoint.get("scheme", "http"),
            "relabel_configs": relabelings,
        }
        if "params" in endpoint:
            job["params"] = endpoint["params"]
        job.update(_http_client(endpoint, secrets or {}, files))
        if endpoint.get("metricRelabelings"):
            job["metric_relabel_configs"] = relabel(endpoint["metricRelabelings"])
        jobs.append(job)
    return jobs


def probe_job(probe: dict[str, Any], *, prober_address: str, secrets: dict[tuple[str, str], str] | None = None,
              files: Path | None = None) -> dict[str, Any]:
    """generateProbeConfig for static targets; the prober's Service address replaced by
    `prober_address` (no cluster DNS here)."""
    spec = probe["spec"]
    static = spec["targets"]["staticConfig"]
    relabelings: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    if spec.get("jobName"):
        relabelings.append({"target_label": "job", "replacement": spec["jobName"]})
    relabelings += [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": prober_address},
        *relabel(static.get("relabelingConfigs")),
        *_sharding("__param_target"),
    ]
    job: dict[str, Any] = {
        "job_name": f"probe/{probe['metadata']['namespace']}/{probe['metadata']['name']}",
        "honor_timestamps": True,
        "metrics_path": spec["prober"].get("path", "/probe"),
        "scrape_interval": spec["interval"], "scrape_timeout": spec["scrapeTimeout"],
        "scheme": spec["prober"].get("scheme", "http"),
        "static_configs": [{"targets": static["static"],
                            "labels": {**(static.get("labels") or {}), "namespace": probe["metadata"]["namespace"]}}],
        "relabel_configs": relabelings,
    }
    if spec.get("module"):
        job["params"] = {"module": [spec["module"]]}
    job.update(_http_client(spec, secrets or {}, files))
    if spec.get("metricRelabelings"):
        job["metric_relabel_configs"] = relabel(spec["metricRelabelings"])
    return job

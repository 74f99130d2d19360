{{/* The chart name, or nameOverride. */}}
{{- define "illiad-port-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, or the release name with the
chart name appended unless the release name already contains it. 63 characters at most
(a DNS label).
*/}}
{{- define "illiad-port-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart: name-version, as the helm.sh/chart label wants it. */}}
{{- define "illiad-port-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select this release's pods. */}}
{{- define "illiad-port-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "illiad-port-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels of every resource of the chart. */}}
{{- define "illiad-port-exporter.labels" -}}
helm.sh/chart: {{ include "illiad-port-exporter.chart" . }}
{{ include "illiad-port-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: exporter
illiad-port-exporter/vantage: {{ .Values.vantage }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "illiad-port-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "illiad-port-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "illiad-port-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the config is mounted in the container. */}}
{{- define "illiad-port-exporter.configDir" -}}
/etc/illiad-exporter
{{- end }}

{{/* The key (file name) of the config in its ConfigMap or Secret. */}}
{{- define "illiad-port-exporter.configKey" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKey }}{{ else }}illiad.yml{{ end }}
{{- end }}

{{/* The rule files the PrometheusRule is made of: files/alerts links to the repository's alerts/. */}}
{{- define "illiad-port-exporter.ruleFiles" -}}
files/alerts/*.rules.yml
{{- end }}

{{/* "true" when sites are scraped one by one through /probe (ServiceMonitor sites or a Probe):
then /metrics must not probe them all again (the config's exporter.probe_on_metrics: false). */}}
{{- define "illiad-port-exporter.sitesThroughProbe" -}}
{{- if or (and .Values.serviceMonitor.enabled .Values.serviceMonitor.sites) (and .Values.probe.enabled .Values.probe.sites) }}true{{ end }}
{{- end }}

{{/* The scheme scrapes use: https when the web config turns TLS on. */}}
{{- define "illiad-port-exporter.scheme" -}}
{{- if .Values.webConfig.tls }}https{{ else }}http{{ end }}
{{- end }}

{{/* Where the web config Secret is mounted (beside, not inside, the config's read-only mount). */}}
{{- define "illiad-port-exporter.webConfigDir" -}}
/etc/illiad-exporter-web
{{- end }}

{{/* The exporter's in-cluster address: Service name, namespace and port. */}}
{{- define "illiad-port-exporter.serviceAddress" -}}
{{- printf "%s.%s.svc:%v" (include "illiad-port-exporter.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{/* Relabelings that make one site's scrape a target of its own: instance and site are the
site's name (without them every site's endpoint has the same target labels, and their
samples overwrite each other). */}}
{{- define "illiad-port-exporter.siteRelabelings" -}}
- targetLabel: instance
  replacement: {{ . | quote }}
- targetLabel: site
  replacement: {{ . | quote }}
{{- end }}

{{/* Metric relabeling for per-site scrapes: the target's site label makes Prometheus keep the
sample's own (equal) site as exported_site; drop that copy. */}}
{{- define "illiad-port-exporter.dropExportedSite" -}}
- action: labeldrop
  regex: exported_site
{{- end }}

{{/* The scrape credentials of the web config's basic auth (prometheus-operator BasicAuth). */}}
{{- define "illiad-port-exporter.scrapeAuth" -}}
{{- with .Values.webConfig.tls }}
tlsConfig:
  {{- if $.Values.webConfig.scrapeTlsConfig }}
  {{- toYaml $.Values.webConfig.scrapeTlsConfig | nindent 2 }}
  {{- else }}
  insecureSkipVerify: true
  {{- end }}
{{- end }}
{{- with .Values.webConfig.basicAuthSecret }}
basicAuth:
  username: {name: {{ . }}, key: username}
  password: {name: {{ . }}, key: password}
{{- end }}
{{- end }}

{{/* A liveness or readiness probe: the values' httpGet, or with a web config (TLS, basic auth,
client certificates, which kubelet's httpGet cannot pass) an exec of `illiad-exporter
healthcheck`, which reads the same web config. Called with (list $ probe path). */}}
{{- define "illiad-port-exporter.healthProbe" -}}
{{- $ctx := index . 0 }}
{{- $probe := deepCopy (index . 1) }}
{{- if $ctx.Values.webConfig.existingSecret }}
{{- $_ := unset $probe "httpGet" }}
{{- $command := list "illiad-exporter" "healthcheck" (printf "--address=:%v" $ctx.Values.port) (printf "--path=%s" (index . 2)) }}
{{- $_ := set $probe "exec" (dict "command" $command) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

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

{{/*
Expand the name of the chart.
*/}}
{{- define "agentrun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (63 characters at most: DNS naming spec).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "agentrun.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "agentrun.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "agentrun.labels" -}}
helm.sh/chart: {{ include "agentrun.chart" . }}
{{ include "agentrun.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentrun
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "agentrun.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "agentrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentrun.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image; the tag defaults to the chart's appVersion.
*/}}
{{- define "agentrun.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The image tool Jobs run in (the same image by default: it carries `agentrun-tool`).
*/}}
{{- define "agentrun.toolImage" -}}
{{- default (include "agentrun.image" .) .Values.operator.toolImage }}
{{- end }}

{{/*
Name of the ConfigMap holding the prompt templates.
*/}}
{{- define "agentrun.promptsConfigMap" -}}
{{- printf "%s-prompts" (include "agentrun.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The in-cluster URL of the operator's health endpoint (through its Service).
*/}}
{{- define "agentrun.healthURL" -}}
{{- if .Values.tests.healthURL }}
{{- .Values.tests.healthURL }}
{{- else }}
{{- printf "http://%s.%s.svc:%d/healthz" (include "agentrun.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped names (ClusterRoles, ClusterRoleBindings) carry the full name so that two
releases never collide; with the release name `agentrun` they are agentrun-viewer, ...
*/}}
{{- define "agentrun.clusterName" -}}
{{- printf "%s-%s" (include "agentrun.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Custom resources of the chart's own CRDs (AgentTools, example Agents) are hooks: Helm maps
every kind of a release before creating anything, so they cannot be in the same install as
the CRDs. before-hook-creation replaces them on each upgrade.
*/}}
{{- define "agentrun.crHookAnnotations" -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-weight: "0"
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/*
The approval webhook's Service, TLS Secret and cert-manager Certificate/Issuer name.
*/}}
{{- define "agentrun.webhookName" -}}
{{- printf "%s-webhook" (include "agentrun.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentrun.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "agentrun.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The peering object the replicas share (replicaCount > 1), as `--peering` names it.
*/}}
{{- define "agentrun.peeringName" -}}
agentrun
{{- end }}

{{/*
Model base URLs the operator allows: model.allowedURLs plus the example Agent's model.baseURL
(the chart's own values never name a model the operator would refuse).
*/}}
{{- define "agentrun.modelURLs" -}}
{{- $urls := .Values.model.allowedURLs }}
{{- if and .Values.model.baseURL (not (has .Values.model.baseURL $urls)) }}
{{- $urls = append $urls .Values.model.baseURL }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/*
A NetworkPolicy peer from a values entry: {cidr, except} or {namespaceSelector, podSelector}.
*/}}
{{- define "agentrun.peer" -}}
{{- if .cidr }}
- ipBlock:
    cidr: {{ .cidr }}
    {{- with .except }}
    except:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- else }}
- {{- with .namespaceSelector }}
  namespaceSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Egress rules common to tool pods and the operator: DNS and the apiserver.
*/}}
{{- define "agentrun.baseEgress" -}}
# DNS.
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
  {{- with .Values.networkPolicy.dns }}
  to:
    {{- range . }}
    {{- include "agentrun.peer" . | nindent 4 }}
    {{- end }}
  {{- end }}
# The apiserver.
- ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- $cidrs := .Values.networkPolicy.apiServer.cidrs }}
  {{- if not $cidrs }}
  {{- $endpoints := lookup "v1" "Endpoints" "default" "kubernetes" }}
  {{- range $subset := (($endpoints | default dict).subsets | default list) }}
  {{- range $address := ($subset.addresses | default list) }}
  {{- $cidrs = append $cidrs (printf "%s/%s" $address.ip (ternary "128" "32" (contains ":" $address.ip))) }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- with $cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
Extra egress rules from a values list (toolEgress, operatorEgress).
*/}}
{{- define "agentrun.extraEgress" -}}
{{- range . }}
- to:
    {{- include "agentrun.peer" . | nindent 4 }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The OTEL_* environment of the operator and the receiver (otel.*); nothing when off.
*/}}
{{- define "agentrun.otelEnv" -}}
{{- if .Values.otel.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "otel.endpoint is required when otel.enabled (the collector's OTLP/HTTP address, e.g. http://otel-collector.observability:4318)" .Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
{{- if .Values.otel.captureContent }}
- name: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
  value: "true"
{{- end }}
{{- range $k, $v := .Values.otel.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The receiver's name (Deployment, Service, ServiceAccount, ConfigMap, NetworkPolicy).
*/}}
{{- define "agentrun.receiverName" -}}
{{- printf "%s-receiver" (include "agentrun.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The Secret holding the receiver's bearer token(s): receiver.existingSecret or the chart's.
*/}}
{{- define "agentrun.receiverSecret" -}}
{{- default (printf "%s-token" (include "agentrun.receiverName" .) | trunc 63 | trimSuffix "-") .Values.receiver.existingSecret }}
{{- end }}

{{/*
"true" when the receiver is rendered with Slack approvals (receiver.slack.enabled): its config,
Secret mount, RBAC, egress and the operator's --approval-proxy all follow this one switch.
*/}}
{{- define "agentrun.receiverSlack" -}}
{{- if and .Values.receiver.enabled .Values.receiver.slack.enabled (include "agentrun.receiverNamespaces" .) }}true{{- end }}
{{- end }}

{{/*
The Kubernetes user of the receiver's ServiceAccount (the operator's --approval-proxy).
*/}}
{{- define "agentrun.receiverUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "agentrun.receiverName" .) }}
{{- end }}

{{/*
Namespaces the receiver may create runs in, comma-separated: receiver.namespaces, else
toolNamespaces. Its RBAC is bound there and its config bounded by them.
*/}}
{{- define "agentrun.receiverNamespaces" -}}
{{- join "," (default .Values.toolNamespaces .Values.receiver.namespaces) }}
{{- end }}

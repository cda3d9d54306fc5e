{{/* The chart's name. */}}
{{- define "vramseal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the objects' name. */}}
{{- define "vramseal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the agent's pods. */}}
{{- define "vramseal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vramseal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The labels of every object but its component. */}}
{{- define "vramseal.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vramseal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: vramseal
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels of the agent's objects. */}}
{{- define "vramseal.labels" -}}
{{ include "vramseal.baseLabels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* The Prometheus job the alert rules and dashboards select. */}}
{{- define "vramseal.job" -}}vramseal{{- end -}}

{{- define "vramseal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vramseal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vramseal.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "vramseal.secretName" -}}
{{- default (printf "%s-seal-secret" (include "vramseal.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{/* Where the seal secret is mounted: the folder of config.seal_secret_file. */}}
{{- define "vramseal.secretDir" -}}
{{- dir .Values.config.seal_secret_file -}}
{{- end -}}

{{- define "vramseal.socketDir" -}}/run/vramseal{{- end -}}

{{/* Whether the web server needs a web-config.yml, and which Secret holds it. */}}
{{- define "vramseal.webConfig" -}}
{{- if or .Values.web.existingConfigSecret .Values.web.tls.enabled .Values.web.basicAuth.users -}}true{{- end -}}
{{- end -}}
{{- define "vramseal.webConfigSecret" -}}
{{- default (printf "%s-web-config" (include "vramseal.fullname" .)) .Values.web.existingConfigSecret -}}
{{- end -}}

{{- define "vramseal.scheme" -}}
{{- if .Values.web.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* The agent's configuration as the ConfigMap holds it: the values' config,
with the consumer socket set when handoff.enabled and the configuration
leaves it unset. */}}
{{- define "vramseal.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if .Values.handoff.enabled -}}
{{- $h := deepCopy (default dict $cfg.handoff) -}}
{{- if not $h.socket -}}
{{- $_ := set $h "socket" (printf "%s/handoff.sock" (include "vramseal.socketDir" .)) -}}
{{- end -}}
{{- $_ := set $cfg "handoff" $h -}}
{{- end -}}
{{- if .Values.podResources.enabled -}}
{{- $k := deepCopy (default dict $cfg.kubernetes) -}}
{{- if not $k.pod_resources_socket -}}
{{- $_ := set $k "pod_resources_socket" (printf "%s/kubelet.sock" .Values.podResources.hostPath) -}}
{{- end -}}
{{- $_ := set $cfg "kubernetes" $k -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The relabelings both monitors start with: job as the rules select it,
instance = the node, so alerts follow the node and not the pod IP. */}}
{{- define "vramseal.relabelings" -}}
- targetLabel: job
  replacement: {{ include "vramseal.job" . }}
  action: replace
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: instance
  action: replace
{{- end -}}

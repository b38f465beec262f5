{{- define "appdb-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "appdb-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "appdb-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "appdb-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "appdb-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The names of the environment variables deployment.yaml sets; extraEnv may not repeat them (a real API server refuses
duplicate keys in env under server-side apply, and the later entry would silently win under client-side apply).
*/}}
{{- define "appdb-operator.chartEnvNames" -}}
APPDB_LISTEN APPDB_LOG_FORMAT RUST_LOG APPDB_LEADER_ELECTION APPDB_LEASE_NAME APPDB_LEASE_DURATION_SECONDS APPDB_LEASE_GRACE_SECONDS APPDB_POOL APPDB_RESERVED APPDB_RELEASE_COOLDOWN_SECONDS APPDB_ALLOCATION_GC_GRACE_SECONDS APPDB_OPERATOR_IMAGE APPDB_VPN_GATEWAY_IMAGE APPDB_VPN_DATAPATH APPDB_VPN_EXPOSURE APPDB_API_SERVER_ENDPOINTS APPDB_CLUSTER_DOMAIN APPDB_CONCURRENCY APPDB_WORKLOAD_PLACEMENT POD_NAME POD_NAMESPACE
{{- end -}}

{{- define "appdb-operator.extraEnv" -}}
{{- $taken := splitList " " (include "appdb-operator.chartEnvNames" .) -}}
{{- $seen := dict -}}
{{- range .Values.extraEnv -}}
{{- if has .name $taken -}}
{{- fail (printf "extraEnv: %s is set by the chart; use its value instead (see values.yaml)" .name) -}}
{{- end -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "extraEnv: %s is listed twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- with .Values.extraEnv -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/*
The placement of the pods the operator creates (--workload-placement, JSON): workloads.*, plus the operator's own
nodeSelector, tolerations and affinity when workloads.inheritOperatorPlacement is on.
*/}}
{{- define "appdb-operator.workloadPlacement" -}}
{{- $w := .Values.workloads -}}
{{- $nodeSelector := deepCopy ($w.nodeSelector | default dict) -}}
{{- $tolerations := $w.tolerations | default list -}}
{{- $affinity := $w.affinity | default dict -}}
{{- if $w.inheritOperatorPlacement -}}
{{- $nodeSelector = merge $nodeSelector (.Values.nodeSelector | default dict) -}}
{{- $tolerations = concat (.Values.tolerations | default list) $tolerations -}}
{{- if not $affinity -}}
{{- $affinity = .Values.affinity | default dict -}}
{{- end -}}
{{- end -}}
{{- $placement := dict -}}
{{- if $nodeSelector -}}{{- $_ := set $placement "nodeSelector" $nodeSelector -}}{{- end -}}
{{- if $tolerations -}}{{- $_ := set $placement "tolerations" $tolerations -}}{{- end -}}
{{- if $affinity -}}{{- $_ := set $placement "affinity" $affinity -}}{{- end -}}
{{- with $w.priorityClassName -}}{{- $_ := set $placement "priorityClassName" . -}}{{- end -}}
{{- toJson $placement -}}
{{- end -}}

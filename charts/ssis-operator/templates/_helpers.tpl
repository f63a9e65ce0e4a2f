{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "ssis-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "ssis-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ssis-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. Usage: include "ssis-operator.labels" (dict "ctx" $ "component" "operator") */}}
{{- define "ssis-operator.labels" -}}
helm.sh/chart: {{ include "ssis-operator.chart" .ctx }}
{{ include "ssis-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ssis-operator
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Immutable selector labels of one component. */}}
{{- define "ssis-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssis-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ssis-operator.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "ssis-operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ssis-operator.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (printf "%s-agent" (include "ssis-operator.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create=false" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference. Usage: include "ssis-operator.image" (dict "ctx" $ "image" .Values.operator.image) */}}
{{- define "ssis-operator.image" -}}
{{- $repo := .image.repository -}}
{{- with .ctx.Values.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Seconds of a period value ("90s", "15m", "2h"), for PromQL comparisons. Usage: include "ssis-operator.seconds" "15m" */}}
{{- define "ssis-operator.seconds" -}}
{{- $n := atoi (regexFind "^[0-9]+" .) -}}
{{- $unit := regexFind "[smh]$" . -}}
{{- if eq $unit "h" -}}{{ mul $n 3600 }}{{- else if eq $unit "m" -}}{{ mul $n 60 }}{{- else -}}{{ $n }}{{- end -}}
{{- end -}}

{{/* Cross-field checks the JSON schema cannot phrase clearly. */}}
{{- define "ssis-operator.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail (printf "operator.replicas=%d requires operator.leaderElection.enabled=true: without a Lease, replicas would reconcile concurrently. Set operator.replicas=1 to run without leader election." (int .Values.operator.replicas)) -}}
{{- end -}}
{{- if and .Values.agent.nodeBoundStatusPolicy.enabled (not .Values.agent.enabled) -}}
{{- fail "agent.nodeBoundStatusPolicy.enabled=true requires agent.enabled=true (the policy matches the agent DaemonSet's ServiceAccount)" -}}
{{- end -}}
{{- end -}}

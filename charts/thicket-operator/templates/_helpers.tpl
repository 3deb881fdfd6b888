{{- define "thicket-operator.name" -}}thicket-operator{{- end -}}

{{- define "thicket-operator.fullname" -}}
{{- if contains "thicket-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-thicket-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "thicket-operator.selectorLabels" -}}
app.kubernetes.io/name: thicket-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "thicket-operator.labels" -}}
{{ include "thicket-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thicket
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "thicket-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "thicket-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "thicket-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "warden.fullname" -}}{{ .Release.Name }}-warden{{- end -}}
{{- define "warden.labels" -}}
app.kubernetes.io/name: warden
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

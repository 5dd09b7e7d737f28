{{- define "lb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lb.pg" -}}
{{- default (printf "%s-pg" (include "lb.fullname" .)) .Values.postgres.name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "lb.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lb.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lb.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Every container: non-root, no privilege escalation, no capabilities, read-only root. */}}
{{- define "lb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "lb.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lb.scheduling" -}}
{{- with .root.Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .root.Values.topologySpread }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels: {{- include "lb.selector" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Settings the API and the broadcasters share: Redis, JWT, production mode. */}}
{{- define "lb.commonEnv" -}}
- name: LEADERBOARD_ENV
  value: prod
- name: LEADERBOARD_REDIS_URL
  value: {{ if .Values.redis.enabled }}{{ printf "redis://%s-redis:6379/0" (include "lb.fullname" .) | quote }}{{ else }}{{ .Values.redis.externalUrl | quote }}{{ end }}
- name: LEADERBOARD_JWT_ALGORITHM
  value: {{ .Values.auth.algorithm | quote }}
{{- if eq .Values.auth.algorithm "HS256" }}
- name: LEADERBOARD_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-jwt" (include "lb.fullname" .)) .Values.auth.existingSecret }}
      key: jwt-secret
{{- end }}
{{- with .Values.auth.publicKey }}
- name: LEADERBOARD_JWT_PUBLIC_KEY
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwksUrl }}
- name: LEADERBOARD_JWT_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.issuer }}
- name: LEADERBOARD_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.audience }}
- name: LEADERBOARD_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* A random secret that survives upgrades (lookup finds the existing one in a cluster). */}}
{{- define "lb.keep" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if .given -}}
{{- .given -}}
{{- else if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

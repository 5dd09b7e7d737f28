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

{{/* The chart runs its own PostgreSQL cluster (and operator) unless a managed one is named. */}}
{{- define "lb.managedPostgres" -}}
{{- if not (or .Values.postgres.external.uri .Values.postgres.external.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* The Secret with tls.crt, tls.key and ca.crt of the chart's PostgreSQL members and Redis. */}}
{{- define "lb.tlsSecret" -}}
{{- default (printf "%s-tls" (include "lb.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* TLS for servers of the chart's own (its Redis, its PostgreSQL members): with managed
     services only, there is nothing to issue a certificate for. */}}
{{- define "lb.ownTls" -}}
{{- if and .Values.tls.enabled (or .Values.redis.enabled (include "lb.managedPostgres" .)) -}}true{{- end -}}
{{- end -}}

{{/* Where the components find the CA (one file of the TLS Secret, mounted read-only). */}}
{{- define "lb.caPath" -}}/etc/leaderboard/tls/ca.crt{{- end -}}

{{/* Settings the API and the broadcasters share: Redis (as this component's own user),
     JWT, production mode. Call with (dict "root" . "component" "api"). */}}
{{- define "lb.commonEnv" -}}
{{- $root := .root }}
{{- with $root }}
- name: LEADERBOARD_ENV
  value: prod
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "lb.fullname" . }}-redis, key: {{ $.component }}-password}
- name: LEADERBOARD_REDIS_URL
  {{- $host := printf "%s-redis:6379/0" (include "lb.fullname" .) }}
  {{- if .Values.tls.enabled }}
  value: {{ printf "rediss://%s:$(REDIS_PASSWORD)@%s?ssl_ca_certs=%s" $.component $host (include "lb.caPath" .) | quote }}
  {{- else }}
  value: {{ printf "redis://%s:$(REDIS_PASSWORD)@%s" $.component $host | quote }}
  {{- end }}
{{- else if .Values.redis.externalUrlSecret }}
- name: LEADERBOARD_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.externalUrlSecret }}, key: url}
{{- else }}
- name: LEADERBOARD_REDIS_URL
  value: {{ .Values.redis.externalUrl | quote }}
{{- end }}
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
{{- end }}
{{- end -}}

{{/* CA files for the components that verify the servers: the chart's own (Redis, and its
     PostgreSQL members), and a managed PostgreSQL's. PGSSLROOTCERT is libpq's (and asyncpg's)
     variable, so the database URI itself can stay `?sslmode=verify-full`. */}}
{{- define "lb.caEnv" -}}
{{- if .Values.postgres.external.caCert }}
- name: PGSSLROOTCERT
  value: /etc/leaderboard/postgres-ca/ca.crt
{{- else if and .Values.tls.enabled (include "lb.managedPostgres" .) }}
- name: PGSSLROOTCERT
  value: {{ include "lb.caPath" . }}
{{- end }}
{{- end -}}

{{- define "lb.caVolumeMounts" -}}
{{- if include "lb.ownTls" . }}
- {name: ca, mountPath: /etc/leaderboard/tls, readOnly: true}
{{- end }}
{{- if .Values.postgres.external.caCert }}
- {name: postgres-ca, mountPath: /etc/leaderboard/postgres-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "lb.caVolumes" -}}
{{- if include "lb.ownTls" . }}
- name: ca
  secret:
    secretName: {{ include "lb.tlsSecret" . }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- if .Values.postgres.external.caCert }}
- name: postgres-ca
  configMap: {name: {{ include "lb.fullname" . }}-postgres-ca}
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

{{/*
The connection budget: the most API pods the autoscaler may run, times workers, times each
worker's pool, must fit in what the database leaves the API. One clear line otherwise.
*/}}
{{- define "lb.connectionBudget" -}}
{{- $api := .Values.api -}}
{{- $pods := int $api.replicas -}}
{{- if $api.autoscaling.enabled }}{{ $pods = max $pods (int $api.autoscaling.maxReplicas) }}{{ end -}}
{{- $need := mul $pods (int $api.workers) (int $api.dbPoolMax) -}}
{{- $limit := 0 -}}
{{- if include "lb.managedPostgres" . -}}
{{- $limit = sub (int .Values.postgres.maxConnections) (int .Values.postgres.reservedConnections) -}}
{{- else if gt (int .Values.postgres.external.maxConnections) 0 -}}
{{- $limit = int .Values.postgres.external.maxConnections -}}
{{- end -}}
{{- if and (gt $limit 0) (gt $need $limit) -}}
{{- fail (printf "connection budget: %d API pods x %d workers x %d connections (api.dbPoolMax) = %d, more than the %d the database leaves the API; lower api.dbPoolMax or api.autoscaling.maxReplicas, or raise postgres.maxConnections" $pods (int $api.workers) (int $api.dbPoolMax) $need $limit) -}}
{{- end -}}
{{- end -}}

{{/*
Naming. Every component has its own `taskhub.<component>.fullname`; names are
truncated to 63 characters (DNS labels).
*/}}
{{- define "taskhub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "taskhub.fullname" -}}
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

{{- define "taskhub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* CNPG limits cluster names to 50 characters (it appends suffixes). */}}
{{- define "taskhub.api.fullname" -}}{{ include "taskhub.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end }}
{{- define "taskhub.relay.fullname" -}}{{ include "taskhub.fullname" . | trunc 57 | trimSuffix "-" }}-relay{{- end }}
{{- define "taskhub.beat.fullname" -}}{{ include "taskhub.fullname" . | trunc 58 | trimSuffix "-" }}-beat{{- end }}
{{- define "taskhub.migrate.fullname" -}}{{ include "taskhub.fullname" . | trunc 40 | trimSuffix "-" }}-migrate-{{ .Release.Revision }}{{- end }}
{{- define "taskhub.redis.fullname" -}}{{ include "taskhub.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end }}
{{- define "taskhub.postgresql.fullname" -}}{{ include "taskhub.fullname" . | trunc 47 | trimSuffix "-" }}-pg{{- end }}
{{- define "taskhub.rabbitmq.fullname" -}}{{ include "taskhub.fullname" . | trunc 40 | trimSuffix "-" }}-rabbitmq{{- end }}
{{- define "taskhub.keycloak.fullname" -}}{{ include "taskhub.fullname" . | trunc 40 | trimSuffix "-" }}-keycloak{{- end }}
{{- define "taskhub.keycloakdb.fullname" -}}{{ include "taskhub.fullname" . | trunc 44 | trimSuffix "-" }}-kc-pg{{- end }}

{{/* Worker group Deployment name. Call with (dict "ctx" $ "group" $name). */}}
{{- define "taskhub.worker.fullname" -}}
{{- printf "%s-worker-%s" (include "taskhub.fullname" .ctx | trunc 30 | trimSuffix "-") .group | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Pooler name. Call with (dict "ctx" $ "type" "rw"|"ro"). */}}
{{- define "taskhub.pooler.fullname" -}}
{{- printf "%s-pooler-%s" (include "taskhub.postgresql.fullname" .ctx) .type }}
{{- end }}

{{- define "taskhub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskhub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Labels. Selector labels never carry the chart or app version, so upgrades
never touch immutable selectors. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "taskhub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskhub.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "taskhub.labels" -}}
helm.sh/chart: {{ include "taskhub.chart" .ctx }}
{{ include "taskhub.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: taskhub
{{- end }}

{{/* Worker group selector labels. Call with (dict "ctx" $ "group" $name). */}}
{{- define "taskhub.worker.selectorLabels" -}}
{{ include "taskhub.selectorLabels" (dict "ctx" .ctx "component" "worker") }}
taskhub.io/worker-group: {{ .group }}
{{- end }}

{{/* Image reference; the tag defaults to appVersion. */}}
{{- define "taskhub.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be \"latest\": pin a version (defaults to the chart appVersion)" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Hardened security contexts shared by every container of the chart. */}}
{{- define "taskhub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "taskhub.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The only writable path of an app container: /tmp. */}}
{{- define "taskhub.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "taskhub.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "taskhub.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* In-cluster DNS suffix of a Service of this release. */}}
{{- define "taskhub.svcHost" -}}
{{- printf "%s.%s.svc" .name .ctx.Release.Namespace }}
{{- end }}

{{/* The OIDC issuer the API validates tokens against ("" = OIDC off). */}}
{{- define "taskhub.oidcIssuer" -}}
{{- if .Values.auth.oidc.issuer }}
{{- .Values.auth.oidc.issuer | trimSuffix "/" }}
{{- else if .Values.keycloak.enabled }}
{{- printf "%s/realms/%s" (include "taskhub.keycloak.baseUrl" .) .Values.keycloak.realm.name }}
{{- end }}
{{- end }}

{{/* Keycloak's base URL: the public hostname, or its in-cluster Service. */}}
{{- define "taskhub.keycloak.baseUrl" -}}
{{- if .Values.keycloak.hostname }}
{{- .Values.keycloak.hostname | trimSuffix "/" }}
{{- else }}
{{- printf "http://%s:8080" (include "taskhub.svcHost" (dict "ctx" . "name" (printf "%s-service" (include "taskhub.keycloak.fullname" .)))) }}
{{- end }}
{{- end }}

{{/* Fail early on an incomplete external-service configuration. */}}
{{- define "taskhub.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret) }}
{{- fail "postgresql.enabled is false: set externalDatabase.existingSecret (a Secret with the database URL)" }}
{{- end }}
{{- if and (not .Values.rabbitmq.enabled) (not .Values.externalBroker.existingSecret) }}
{{- fail "rabbitmq.enabled is false: set externalBroker.existingSecret (a Secret with the AMQP URL)" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.existingSecret) }}
{{- fail "redis.enabled is false: set externalRedis.existingSecret (a Secret with the Redis URL)" }}
{{- end }}
{{- if and .Values.bootstrapAdmin.enabled (not .Values.bootstrapAdmin.existingSecret) }}
{{- fail "bootstrapAdmin.enabled is true: set bootstrapAdmin.existingSecret" }}
{{- end }}
{{- if and .Values.auth.oidc.issuer .Values.keycloak.enabled }}
{{- fail "auth.oidc.issuer is set: disable keycloak.enabled (an external issuer replaces the in-chart Keycloak)" }}
{{- end }}
{{- end }}

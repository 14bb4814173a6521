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
{{- define "taskhub.operator.fullname" -}}{{ include "taskhub.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end }}
{{- define "taskhub.operator.uninstall.fullname" -}}{{ include "taskhub.fullname" . | trunc 44 | trimSuffix "-" }}-operator-uninstall{{- end }}
{{- define "taskhub.test.fullname" -}}{{ include "taskhub.fullname" . | trunc 58 | trimSuffix "-" }}-test{{- end }}

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

{{/*
`image` of a container of a Deployment the operator manages (api, relay, beat,
the workers). Operator off: the release's image. Operator mode: the image of
the same container in the live Deployment. Helm's three-way merge re-applies
whatever the manifest says, so rendering the release's image would have a
`helm upgrade` roll the Deployments ahead of their migration, and undo a
rollout the operator had gated; rendering the live image leaves the image to
the operator. The field cannot be left out: the API server requires an image
on every container of a pod template (validateContainerCommon). A Deployment
or container that doesn't exist yet (a first install; `helm template` has no
cluster) takes the release's image and starts on it at once, as with the
operator off: the API's readiness waits for the schema to be at head, and the
operator runs the migration Job immediately. Call with
(dict "ctx" $ "deployment" <Deployment name> "container" <container name>).
*/}}
{{- define "taskhub.workloadImage" -}}
{{- $image := include "taskhub.image" .ctx }}
{{- if .ctx.Values.operator.enabled }}
{{- $live := lookup "apps/v1" "Deployment" .ctx.Release.Namespace .deployment | default dict }}
{{- range (dig "spec" "template" "spec" "containers" list $live) }}
{{- if and (kindIs "map" .) (eq (dig "name" "" .) $.container) (dig "image" "" .) }}
{{- $image = dig "image" "" . }}
{{- end }}
{{- end }}
{{- end }}
{{- $image }}
{{- end }}

{{/*
"true" when the operator scales this worker group from its queue depth (the
Deployment then leaves `replicas` to it). A group without an autoscaling
block keeps its fixed replicas. Call with (dict "ctx" $ "cfg" $groupValues).
*/}}
{{- define "taskhub.worker.autoscaled" -}}
{{- $as := .cfg.autoscaling | default dict }}
{{- if and .ctx.Values.operator.enabled .cfg.autoscaling (ternary $as.enabled true (hasKey $as "enabled")) }}true{{- end }}
{{- end }}

{{/*
The RabbitMQ management API the operator reads queue depth from, as JSON:
{"managementUrl", "credentialsSecret"}, or {} when unknown. The in-chart
broker: the RabbitMQ cluster operator names the client Service after the
RabbitmqCluster (management port 15672) and generates `<name>-default-user`
(keys username and password; the user has the administrator tag).
*/}}
{{- define "taskhub.operator.rabbitmq" -}}
{{- if .Values.rabbitmq.enabled }}
{{- $rmq := include "taskhub.rabbitmq.fullname" . }}
{{- dict "managementUrl" (printf "http://%s:15672" (include "taskhub.svcHost" (dict "ctx" . "name" $rmq))) "credentialsSecret" (printf "%s-default-user" $rmq) | toJson }}
{{- else if and .Values.operator.rabbitmq.managementUrl .Values.operator.rabbitmq.credentialsSecret }}
{{- dict "managementUrl" .Values.operator.rabbitmq.managementUrl "credentialsSecret" .Values.operator.rabbitmq.credentialsSecret | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/* TCP port of a URL: explicit, else 443 for https and 80 for http. */}}
{{- define "taskhub.urlPort" -}}
{{- $url := urlParse . }}
{{- with regexFind ":[0-9]+$" $url.host }}
{{- trimPrefix ":" . }}
{{- else }}
{{- ternary "443" "80" (eq $url.scheme "https") }}
{{- end }}
{{- end }}

{{/*
Name of the expand-phase migration Job the operator creates for the chart's
image: <TaskHub name, at most 43 characters>-migrate-<first 10 hex digits of
sha256(image)> (operator/taskhub_operator/jobs.py, job_name).
*/}}
{{- define "taskhub.operator.migrationJob" -}}
{{- printf "%s-migrate-%s" (include "taskhub.fullname" . | trunc 43 | trimSuffix "-") (include "taskhub.image" . | sha256sum | trunc 10) }}
{{- end }}

{{/*
Pods of the migration Jobs. The operator puts its own labels on the Jobs it
creates (app.kubernetes.io/instance becomes the TaskHub's name, which is the
full name, not the release name), so in operator mode the selector accepts
either.
*/}}
{{- define "taskhub.migrate.podSelector" -}}
{{- if .Values.operator.enabled }}
matchLabels:
  app.kubernetes.io/component: migrate
matchExpressions:
  - key: app.kubernetes.io/instance
    operator: In
    values:
      {{- toYaml (list .Release.Name (include "taskhub.fullname" .) | uniq) | nindent 6 }}
{{- else }}
matchLabels:
  {{- include "taskhub.selectorLabels" (dict "ctx" . "component" "migrate") | nindent 2 }}
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
{{- if .Values.operator.enabled }}
{{- include "taskhub.operator.validate" . }}
{{- end }}
{{- end }}

{{/* Operator mode: what the TaskHub CRD would refuse, refused at render time. */}}
{{- define "taskhub.operator.validate" -}}
{{- $rabbit := include "taskhub.operator.rabbitmq" . | fromJson }}
{{- if not .Values.rabbitmq.enabled }}
{{- $ext := .Values.operator.rabbitmq }}
{{- if and (or $ext.managementUrl $ext.credentialsSecret) (not (and $ext.managementUrl $ext.credentialsSecret)) }}
{{- fail "operator.rabbitmq: set both managementUrl and credentialsSecret (the external broker's management API and a Secret with its username and password)" }}
{{- end }}
{{- end }}
{{- range $group, $cfg := .Values.workers.groups }}
{{- if include "taskhub.worker.autoscaled" (dict "ctx" $ "cfg" $cfg) }}
{{- if not $rabbit }}
{{- fail (printf "workers.groups.%s is autoscaled from RabbitMQ queue depth: with rabbitmq.enabled false, set operator.rabbitmq.managementUrl and operator.rabbitmq.credentialsSecret (or set workers.groups.%s.autoscaling.enabled false)" $group $group) }}
{{- end }}
{{- if gt (int (ternary $cfg.autoscaling.minReplicas 1 (hasKey $cfg.autoscaling "minReplicas"))) (int $cfg.autoscaling.maxReplicas) }}
{{- fail (printf "workers.groups.%s.autoscaling.minReplicas must not exceed maxReplicas" $group) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (int .Values.migrations.backoffLimit) 20 }}
{{- fail "migrations.backoffLimit must be at most 20 in operator mode (TaskHub spec.migrations.backoffLimit)" }}
{{- end }}
{{- if gt (int .Values.migrations.activeDeadlineSeconds) 86400 }}
{{- fail "migrations.activeDeadlineSeconds must be at most 86400 in operator mode (TaskHub spec.migrations.activeDeadlineSeconds)" }}
{{- end }}
{{- end }}

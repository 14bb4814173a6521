{{/*
The migration pod's spec (after restartPolicy), shared by the chart's own Job
(operator off) and the TaskHub's spec.migrations.template (operator mode), so
both run with the same database settings, service account, security context,
resources, env and volumes: straight to the PostgreSQL primary, not through
PgBouncer (Alembic takes session-level locks).

In operator mode the operator sets the image of every container and
initContainer, and the args of the one named `migrate` (`migrate --phase
expand|contract`): both are left out here, and the name must stay `migrate`.
Call with (dict "ctx" $ "operator" bool).
*/}}
{{- define "taskhub.migrate.podSpec" -}}
{{- $ := .ctx -}}
serviceAccountName: {{ include "taskhub.serviceAccountName" $ }}
automountServiceAccountToken: false
{{- with include "taskhub.imagePullSecrets" $ }}
{{ . }}
{{- end }}
securityContext:
  {{- include "taskhub.podSecurityContext" $ | nindent 2 }}
{{- if $.Values.bootstrapAdmin.enabled }}
# Migrations first; the admin is created once the schema exists.
initContainers:
  {{- include "taskhub.migrate.container" . | nindent 2 }}
containers:
  - name: bootstrap-admin
    {{- if not .operator }}
    image: {{ include "taskhub.image" $ }}
    {{- end }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args:
      - bootstrap-admin
    env:
      {{- $adminEnv := list
          (dict "name" "TASKHUB_BOOTSTRAP_ADMIN_USERNAME" "valueFrom" (dict "secretKeyRef" (dict "name" $.Values.bootstrapAdmin.existingSecret "key" $.Values.bootstrapAdmin.usernameKey)))
          (dict "name" "TASKHUB_BOOTSTRAP_ADMIN_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $.Values.bootstrapAdmin.existingSecret "key" $.Values.bootstrapAdmin.passwordKey))) }}
      {{- include "taskhub.env" (dict "ctx" $ "directDb" true "dbOnly" true "extraEnv" $adminEnv) | nindent 6 }}
    resources:
      {{- toYaml $.Values.migrations.resources | nindent 6 }}
    securityContext:
      {{- include "taskhub.containerSecurityContext" $ | nindent 6 }}
    volumeMounts:
      {{- include "taskhub.tmpVolumeMount" $ | nindent 6 }}
{{- else }}
containers:
  {{- include "taskhub.migrate.container" . | nindent 2 }}
{{- end }}
volumes:
  {{- include "taskhub.tmpVolume" $ | nindent 2 }}
{{- end }}

{{/* The `migrate` container. Call with (dict "ctx" $ "operator" bool). */}}
{{- define "taskhub.migrate.container" -}}
{{- $ := .ctx -}}
- name: migrate
  {{- if not .operator }}
  image: {{ include "taskhub.image" $ }}
  {{- end }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  {{- if not .operator }}
  args:
    - migrate
  {{- end }}
  env:
    {{- include "taskhub.env" (dict "ctx" $ "directDb" true "dbOnly" true) | nindent 4 }}
  resources:
    {{- toYaml $.Values.migrations.resources | nindent 4 }}
  securityContext:
    {{- include "taskhub.containerSecurityContext" $ | nindent 4 }}
  volumeMounts:
    {{- include "taskhub.tmpVolumeMount" $ | nindent 4 }}
{{- end }}

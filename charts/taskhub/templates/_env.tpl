{{/*
Environment of a TaskHub container. Credentials come from Secrets (generated
by the operators, or `existingSecret`s); URLs are composed in the pod with
$(VAR) expansion, so no credential is ever rendered into a manifest.

Call with (dict "ctx" $ "directDb" false "listenDb" false "smtp" false "extraEnv" list).
  dbOnly:   only logging, database and signing key (the migration Job).
  directDb: connect to the primary's Service instead of PgBouncer (migrations
            take session-level locks, which transaction pooling breaks).
  listenDb: add TASKHUB_DB__LISTEN_URL, the primary's Service (the relay's
            LISTEN: PgBouncer in transaction mode never delivers a NOTIFY).
  smtp:     add the SMTP settings and credentials (notification workers).
*/}}
{{- define "taskhub.env" -}}
{{- $ := .ctx -}}
- name: TASKHUB_LOG_LEVEL
  value: {{ $.Values.config.logLevel | quote }}
- name: TASKHUB_LOG_JSON
  value: {{ $.Values.config.logJson | quote }}
{{- if $.Values.postgresql.enabled }}
{{- $pg := include "taskhub.postgresql.fullname" $ }}
{{- $db := $.Values.postgresql.database }}
- name: DB_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $pg }}-app
      key: username
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pg }}-app
      key: password
{{- if .directDb }}
- name: TASKHUB_DB__URL
  value: {{ printf "postgresql+asyncpg://$(DB_USERNAME):$(DB_PASSWORD)@%s:5432/%s" (include "taskhub.svcHost" (dict "ctx" $ "name" (printf "%s-rw" $pg))) $db | quote }}
{{- else }}
- name: TASKHUB_DB__URL
  value: {{ printf "postgresql+asyncpg://$(DB_USERNAME):$(DB_PASSWORD)@%s:5432/%s" (include "taskhub.svcHost" (dict "ctx" $ "name" (include "taskhub.pooler.fullname" (dict "ctx" $ "type" "rw")))) $db | quote }}
{{- end }}
- name: TASKHUB_DB__REPLICA_URL
  value: {{ printf "postgresql+asyncpg://$(DB_USERNAME):$(DB_PASSWORD)@%s:5432/%s" (include "taskhub.svcHost" (dict "ctx" $ "name" (include "taskhub.pooler.fullname" (dict "ctx" $ "type" "ro")))) $db | quote }}
{{- if .listenDb }}
- name: TASKHUB_DB__LISTEN_URL
  value: {{ printf "postgresql+asyncpg://$(DB_USERNAME):$(DB_PASSWORD)@%s:5432/%s" (include "taskhub.svcHost" (dict "ctx" $ "name" (printf "%s-rw" $pg))) $db | quote }}
{{- end }}
{{- else }}
- name: TASKHUB_DB__URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalDatabase.existingSecret }}
      key: {{ $.Values.externalDatabase.urlKey }}
- name: TASKHUB_DB__REPLICA_URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalDatabase.existingSecret }}
      key: {{ default $.Values.externalDatabase.urlKey $.Values.externalDatabase.replicaUrlKey }}
{{- if and .listenDb $.Values.externalDatabase.listenUrlKey }}
- name: TASKHUB_DB__LISTEN_URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalDatabase.existingSecret }}
      key: {{ $.Values.externalDatabase.listenUrlKey }}
{{- end }}
{{- end }}
{{- if not .dbOnly }}
{{- if $.Values.rabbitmq.enabled }}
{{- $rmq := include "taskhub.rabbitmq.fullname" $ }}
- name: BROKER_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $rmq }}-default-user
      key: username
- name: BROKER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $rmq }}-default-user
      key: password
- name: TASKHUB_BROKER__URL
  value: {{ printf "amqp://$(BROKER_USERNAME):$(BROKER_PASSWORD)@%s:5672/%%2F" (include "taskhub.svcHost" (dict "ctx" $ "name" $rmq)) | quote }}
{{- else }}
- name: TASKHUB_BROKER__URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalBroker.existingSecret }}
      key: {{ $.Values.externalBroker.urlKey }}
{{- end }}
{{- if $.Values.redis.enabled }}
{{- $redisHost := include "taskhub.svcHost" (dict "ctx" $ "name" (include "taskhub.redis.fullname" $)) }}
{{- if $.Values.redis.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.redis.auth.existingSecret }}
      key: {{ $.Values.redis.auth.passwordKey }}
- name: TASKHUB_REDIS__URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" $redisHost | quote }}
{{- else }}
- name: TASKHUB_REDIS__URL
  value: {{ printf "redis://%s:6379/0" $redisHost | quote }}
{{- end }}
{{- else }}
- name: TASKHUB_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalRedis.existingSecret }}
      key: {{ $.Values.externalRedis.urlKey }}
{{- end }}
{{- end }}
- name: TASKHUB_AUTH__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.auth.existingSecret }}
      key: {{ $.Values.auth.secretKeyKey }}
{{- if not .dbOnly }}
{{- with include "taskhub.oidcIssuer" $ }}
- name: TASKHUB_AUTH__OIDC_ISSUER
  value: {{ . | quote }}
- name: TASKHUB_AUTH__OIDC_AUDIENCE
  value: {{ $.Values.auth.oidc.audience | quote }}
{{- end }}
- name: TASKHUB_WEBHOOKS__SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "taskhub.webhookKeys.secretName" $ }}
      key: {{ $.Values.webhooks.secretKeys.secretKeysKey }}
{{- with $.Values.webhooks.secretKeys.activeKeyId }}
- name: TASKHUB_WEBHOOKS__ACTIVE_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- with $.Values.webhooks.allowedNetworks }}
- name: TASKHUB_WEBHOOKS__ALLOWED_NETWORKS
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
{{- if and .smtp $.Values.smtp.host }}
- name: TASKHUB_SMTP__HOST
  value: {{ $.Values.smtp.host | quote }}
- name: TASKHUB_SMTP__PORT
  value: {{ $.Values.smtp.port | quote }}
- name: TASKHUB_SMTP__FROM_ADDRESS
  value: {{ $.Values.smtp.fromAddress | quote }}
- name: TASKHUB_SMTP__STARTTLS
  value: {{ $.Values.smtp.starttls | quote }}
{{- with $.Values.smtp.existingSecret }}
- name: TASKHUB_SMTP__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.smtp.usernameKey }}
- name: TASKHUB_SMTP__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.smtp.passwordKey }}
{{- end }}
{{- end }}
{{- if and (not .dbOnly) $.Values.tracing.enabled }}
{{- if not $.Values.tracing.endpoint }}
{{- fail "tracing.enabled needs tracing.endpoint: the collector's OTLP/HTTP URL" }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $.Values.tracing.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.tracing.sampleRatio | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,deployment.environment=%s" $.Release.Namespace $.Release.Name | quote }}
{{- end }}
{{- with $.Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The Secret with the webhook secret keys: existingSecret, or the one the chart
generates (templates/common/webhook-keys-secret.yaml).
*/}}
{{- define "taskhub.webhookKeys.secretName" -}}
{{- .Values.webhooks.secretKeys.existingSecret | default (printf "%s-webhook-keys" (include "taskhub.fullname" . | trunc 50 | trimSuffix "-")) -}}
{{- end }}

{{/*
Backups of the CNPG Cluster (docs/deployment.md#backups-and-restore).

CNPG's in-tree Barman Cloud support (`spec.backup.barmanObjectStore`), not
the Barman Cloud plugin: the plugin is a separate deployment with its own
ObjectStore CRD and cert-manager, which this chart's prerequisites do not
install (CNPG 1.27, chart 0.26.0). The object-store block below maps one to
one onto the plugin's ObjectStore `spec.configuration` when we move.
*/}}

{{/* Refuse an incomplete backup or recovery configuration. */}}
{{- define "taskhub.postgresql.validateBackup" -}}
{{- $b := .Values.postgresql.backup }}
{{- $r := .Values.postgresql.recovery }}
{{- if and $b.enabled (not $b.destinationPath) }}
{{- fail "postgresql.backup.enabled needs postgresql.backup.destinationPath: the bucket URL (s3://bucket/path, gs://bucket/path or https://<account>.blob.core.windows.net/<container>/path)" }}
{{- end }}
{{- if and (or $b.enabled $r.enabled) (not $b.existingSecret) (not (include "taskhub.postgresql.backupIdentity" .)) }}
{{- fail (printf "postgresql.backup needs postgresql.backup.existingSecret: the Secret with the %s object-store credentials (or the pods' cloud identity: s3.inheritFromIAMRole, azure.inheritFromAzureAD, google.gkeEnvironment)" $b.provider) }}
{{- end }}
{{- if and $b.enabled (eq $b.scheduledBackup.method "volumeSnapshot") (not $b.scheduledBackup.volumeSnapshotClassName) }}
{{- fail "postgresql.backup.scheduledBackup.method volumeSnapshot needs postgresql.backup.scheduledBackup.volumeSnapshotClassName" }}
{{- end }}
{{- if $r.enabled }}
{{- if not (or $r.destinationPath $b.destinationPath) }}
{{- fail "postgresql.recovery.enabled needs postgresql.recovery.destinationPath (or postgresql.backup.destinationPath): where the source cluster's backups are" }}
{{- end }}
{{- $pg := include "taskhub.postgresql.fullname" . }}
{{- $source := default $pg $r.sourceServerName }}
{{- if and $b.enabled (eq (default $pg $b.serverName) $source) (eq (default $b.destinationPath $r.destinationPath) $b.destinationPath) }}
{{- fail (printf "postgresql.recovery.enabled with backups on: set postgresql.backup.serverName to a new folder (not %q, the source being recovered), e.g. %s-r1" $source $pg) }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when the provider's credentials come from the pods' identity. */}}
{{- define "taskhub.postgresql.backupIdentity" -}}
{{- $b := .Values.postgresql.backup }}
{{- if or (and (eq $b.provider "s3") $b.s3.inheritFromIAMRole) (and (eq $b.provider "azure") $b.azure.inheritFromAzureAD) (and (eq $b.provider "google") $b.google.gkeEnvironment) }}true{{ end }}
{{- end }}

{{/* A secretKeyRef-shaped reference. Call with (dict "name" secret "key" key). */}}
{{- define "taskhub.postgresql.secretKey" -}}
name: {{ .name }}
key: {{ .key }}
{{- end }}

{{/*
A barmanObjectStore block (Cluster spec.backup, or an externalClusters entry
for recovery). Call with (dict "ctx" $ "destinationPath" path "serverName" name).
*/}}
{{- define "taskhub.postgresql.objectStore" -}}
{{- $b := .ctx.Values.postgresql.backup }}
{{- $secret := $b.existingSecret }}
destinationPath: {{ .destinationPath | quote }}
{{- with $b.endpointURL }}
endpointURL: {{ . | quote }}
{{- end }}
{{- with .serverName }}
serverName: {{ . }}
{{- end }}
{{- if eq $b.provider "s3" }}
s3Credentials:
  {{- if $b.s3.inheritFromIAMRole }}
  inheritFromIAMRole: true
  {{- else }}
  accessKeyId:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.s3.accessKeyIdKey) | nindent 4 }}
  secretAccessKey:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.s3.secretAccessKeyKey) | nindent 4 }}
  {{- with $b.s3.regionKey }}
  region:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" .) | nindent 4 }}
  {{- end }}
  {{- with $b.s3.sessionTokenKey }}
  sessionToken:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" .) | nindent 4 }}
  {{- end }}
  {{- end }}
{{- else if eq $b.provider "azure" }}
azureCredentials:
  {{- if $b.azure.inheritFromAzureAD }}
  inheritFromAzureAD: true
  {{- else if $b.azure.connectionStringKey }}
  connectionString:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.azure.connectionStringKey) | nindent 4 }}
  {{- else }}
  storageAccount:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.azure.storageAccountKey) | nindent 4 }}
  {{- if $b.azure.storageSasTokenKey }}
  storageSasToken:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.azure.storageSasTokenKey) | nindent 4 }}
  {{- else }}
  storageKey:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.azure.storageKeyKey) | nindent 4 }}
  {{- end }}
  {{- end }}
{{- else }}
googleCredentials:
  {{- if $b.google.gkeEnvironment }}
  gkeEnvironment: true
  {{- else }}
  applicationCredentials:
    {{- include "taskhub.postgresql.secretKey" (dict "name" $secret "key" $b.google.applicationCredentialsKey) | nindent 4 }}
  {{- end }}
{{- end }}
wal:
  {{- with $b.wal.compression }}
  compression: {{ . }}
  {{- end }}
  maxParallel: {{ $b.wal.maxParallel }}
{{- end }}

{{/* NetworkPolicy building blocks. */}}

{{/* Pods of given TaskHub components. Call with (dict "ctx" $ "components" (list ...)). */}}
{{- define "taskhub.np.componentsSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ include "taskhub.name" .ctx }}
  app.kubernetes.io/instance: {{ .ctx.Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- toYaml .components | nindent 6 }}
{{- end }}

{{/* Egress to cluster DNS (one rule). */}}
{{- define "taskhub.np.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* Egress to the Kubernetes API server (CNPG instance managers, operators). */}}
{{- define "taskhub.np.kubeApiEgress" -}}
- to:
    {{- range .Values.networkPolicy.kubeApiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.kubeApiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/* Ingress from Prometheus on the given port. Call with (dict "ctx" $ "port" 9187). */}}
{{- define "taskhub.np.monitoringIngress" -}}
- from:
    - namespaceSelector:
        {{- toYaml .ctx.Values.networkPolicy.monitoring.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .ctx.Values.networkPolicy.monitoring.podSelector | nindent 8 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}

{{/* Egress to a list of CIDRs on one port. Call with (dict "cidrs" list "ports" list). */}}
{{- define "taskhub.np.cidrEgress" -}}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

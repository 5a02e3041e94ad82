{{/* The OpenTelemetry Collector's TLS and Kafka settings (otel-collector.yaml,
files/otel/*.yaml, jaeger.yaml). Certificates are mounted from Secrets under
/tls/<hop>; each hop's Secret holds tls.crt, tls.key and ca.crt (the shape
cert-manager writes). */}}

{{/* The gateway's DNS name in the monitoring namespace: what the agents check
its certificate against. */}}
{{- define "imageflow.otelGatewayHost" -}}
{{- printf "%s-otel-gateway.%s.svc" (include "imageflow.fullname" .) (include "imageflow.monitoringNamespace" .) -}}
{{- end -}}

{{/* Agent -> gateway, the agent's side: mutual TLS with the hop's Secret, or
plaintext. The load-balancing exporter dials pod IPs, so the name checked is
always the gateway Service's. */}}
{{- define "imageflow.otelGatewayClientTls" -}}
{{- if .Values.otelCollector.tls.gateway.enabled -}}
ca_file: /tls/gateway/ca.crt
cert_file: /tls/gateway/tls.crt
key_file: /tls/gateway/tls.key
server_name_override: {{ include "imageflow.otelGatewayHost" . }}
{{- else -}}
insecure: true
{{- end -}}
{{- end -}}

{{/* Agent -> gateway, the gateway's side (its OTLP receiver): serves the
Secret's certificate and requires a client certificate signed by ca.crt. */}}
{{- define "imageflow.otelGatewayServerTls" -}}
{{- if .Values.otelCollector.tls.gateway.enabled -}}
tls:
  cert_file: /tls/gateway/tls.crt
  key_file: /tls/gateway/tls.key
  client_ca_file: /tls/gateway/ca.crt
{{- end -}}
{{- end -}}

{{/* The host the gateway's trace exporter checks the trace store's
certificate against: traces.serverName, else the endpoint's host. */}}
{{- define "imageflow.otelTracesServerName" -}}
{{- $t := .Values.otelCollector.tls.traces -}}
{{- default (include "imageflow.jaegerOtlpEndpoint" . | splitList ":" | first) $t.serverName -}}
{{- end -}}

{{/* Gateway -> Jaeger/Tempo, the gateway's side. */}}
{{- define "imageflow.otelTracesClientTls" -}}
{{- $t := .Values.otelCollector.tls.traces -}}
{{- if $t.enabled -}}
ca_file: /tls/traces/ca.crt
{{- if $t.clientCertificate }}
cert_file: /tls/traces/tls.crt
key_file: /tls/traces/tls.key
{{- end }}
server_name_override: {{ include "imageflow.otelTracesServerName" . }}
{{- else -}}
insecure: true
{{- end -}}
{{- end -}}

{{/* Gateway -> Loki (otlphttp), the gateway's side; plaintext follows the
endpoint's http:// scheme. */}}
{{- define "imageflow.otelLokiClientTls" -}}
{{- $t := .Values.otelCollector.tls.loki -}}
{{- if $t.enabled -}}
ca_file: /tls/loki/ca.crt
{{- if $t.clientCertificate }}
cert_file: /tls/loki/tls.crt
key_file: /tls/loki/tls.key
{{- end }}
{{- with $t.serverName }}
server_name_override: {{ . }}
{{- end }}
{{- else -}}
insecure: true
{{- end -}}
{{- end -}}

{{/* The Kafka security protocol of the collector's exporters:
otelCollector.kafkaSecurityProtocol, else kafkaClient.credentials'
KAFKA_SECURITY_PROTOCOL, else PLAINTEXT. */}}
{{- define "imageflow.otelKafkaProtocol" -}}
{{- $fromCredentials := get (.Values.kafkaClient.credentials | default dict) "KAFKA_SECURITY_PROTOCOL" -}}
{{- default (default "PLAINTEXT" $fromCredentials) .Values.otelCollector.kafkaSecurityProtocol | upper -}}
{{- end -}}

{{/* The auth block of a Kafka exporter (collector 0.123: TLS under auth.tls).
SASL username, password and mechanism come from the Kafka Secret's
KAFKA_SASL_* keys through the gateway's environment; the CA from
kafkaClient.caSecret mounted at /etc/kafka/ca. */}}
{{- define "imageflow.otelKafkaAuth" -}}
{{- $proto := include "imageflow.otelKafkaProtocol" . -}}
{{- if ne $proto "PLAINTEXT" -}}
auth:
  {{- if hasPrefix "SASL_" $proto }}
  sasl:
    mechanism: ${env:KAFKA_SASL_MECHANISM}
    username: ${env:KAFKA_SASL_USERNAME}
    password: ${env:KAFKA_SASL_PASSWORD}
    version: 1
  {{- end }}
  {{- if hasSuffix "SSL" $proto }}
  tls:
    insecure: false
    {{- if .Values.kafkaClient.caSecret }}
    ca_file: /etc/kafka/ca/ca.crt
    {{- end }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/* Names, labels, images and the environment every workload shares. */}}

{{- define "imageflow.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imageflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "imageflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{/* Common labels; call with (dict "root" $ "component" "resize"). */}}
{{- define "imageflow.labels" -}}
helm.sh/chart: {{ include "imageflow.chart" .root }}
app.kubernetes.io/name: {{ include "imageflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: imageflow
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imageflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imageflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imageflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "imageflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of a binary; call with (dict "root" $ "svc" .Values.services.resize "suffix" ""). */}}
{{- define "imageflow.image" -}}
{{- $repo := default (printf "%s/%s" .root.Values.global.imageRegistry .svc.binary) .svc.image.repository -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.global.imageTag) .svc.image.tag -}}
{{- printf "%s:%s%s" $repo $tag (default "" .suffix) -}}
{{- end -}}

{{- define "imageflow.monitoringNamespace" -}}
{{- .Values.global.monitoringNamespace -}}
{{- end -}}

{{/* Endpoints of the bundled or external infrastructure. */}}
{{- define "imageflow.s3Endpoint" -}}
{{- if .Values.storage.endpoint -}}
{{- .Values.storage.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio:9000" (include "imageflow.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "imageflow.kafkaBrokers" -}}
{{- if .Values.kafkaClient.brokers -}}
{{- .Values.kafkaClient.brokers -}}
{{- else if .Values.kafka.enabled -}}
{{- printf "%s-kafka.%s.svc:9092" (include "imageflow.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "imageflow.otlpEndpoint" -}}
{{- if .Values.telemetry.otlpEndpoint -}}
{{- .Values.telemetry.otlpEndpoint -}}
{{- else if .Values.otelCollector.enabled -}}
{{- printf "http://%s-otel-agent.%s.svc:4317" (include "imageflow.fullname" .) (include "imageflow.monitoringNamespace" .) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the gateway archives telemetry to Kafka telemetry.*: the
only place the metrics the binaries push over OTLP are kept. */}}
{{- define "imageflow.otelKafkaArchive" -}}
{{- if and .Values.otelCollector.enabled .Values.otelCollector.kafkaExport (include "imageflow.kafkaBrokers" .) -}}
true
{{- end -}}
{{- end -}}

{{/* OTEL_METRICS_EXPORTER of the binaries. A push nobody keeps would still
cost every pod an export per interval, and a collector of someone else's
could turn it into a second copy of the scraped series. */}}
{{- define "imageflow.metricsExporter" -}}
{{- $m := .Values.telemetry.metrics.exporter -}}
{{- if ne $m "auto" -}}
{{- $m -}}
{{- else if and (not .Values.telemetry.otlpEndpoint) (include "imageflow.otelKafkaArchive" .) -}}
otlp
{{- else -}}
none
{{- end -}}
{{- end -}}

{{/* OTEL_LOGS_EXPORTER of the binaries: one way out per log line
(telemetry.logs.appPath); with filelog the agent's receiver must be there,
or their logs would reach no store. */}}
{{- define "imageflow.logsExporter" -}}
{{- $path := .Values.telemetry.logs.appPath -}}
{{- if and (eq $path "filelog") (not (and .Values.otelCollector.enabled .Values.otelCollector.agent.containerLogs.enabled)) -}}
{{- fail "telemetry.logs.appPath=filelog needs otelCollector.enabled and otelCollector.agent.containerLogs.enabled (the agent's filelog receiver reads the binaries' logs then)" -}}
{{- end -}}
{{- if and (eq $path "otlp") (include "imageflow.otlpEndpoint" .) -}}
otlp
{{- else -}}
none
{{- end -}}
{{- end -}}

{{/* The kubelet's log files of the binaries' containers, as filelog globs:
what the agent leaves out while the binaries export their logs over OTLP.
Pod names are <Deployment>-<hash>-<hash>, folders <ns>_<pod>_<uid>/<container>. */}}
{{- define "imageflow.appLogGlobs" -}}
{{- $prefix := printf "/var/log/pods/%s_%s" .Release.Namespace (include "imageflow.fullname" .) -}}
{{- if .Values.backend.enabled }}
- {{ $prefix }}-backend-api-*/backend-api/*.log
{{- end }}
{{- range $key, $svc := .Values.services }}
{{- if $svc.enabled }}
- {{ $prefix }}-{{ $key | kebabcase }}-*/{{ $key | kebabcase }}/*.log
{{- end }}
{{- end }}
{{- end -}}

{{- define "imageflow.tritonUrl" -}}
{{- if .Values.triton.externalUrl -}}
{{- .Values.triton.externalUrl -}}
{{- else if .Values.triton.enabled -}}
{{- printf "http://%s-triton:%d" (include "imageflow.fullname" .) (int .Values.triton.grpcPort) -}}
{{- end -}}
{{- end -}}

{{- define "imageflow.jaegerOtlpEndpoint" -}}
{{- if .Values.jaeger.externalOtlpEndpoint -}}
{{- .Values.jaeger.externalOtlpEndpoint -}}
{{- else -}}
{{- printf "%s-jaeger.%s.svc:4317" (include "imageflow.fullname" .) (include "imageflow.monitoringNamespace" .) -}}
{{- end -}}
{{- end -}}

{{- define "imageflow.apiTokensSecret" -}}
{{- default (printf "%s-api-tokens" (include "imageflow.fullname" .)) .Values.apiTokens.existingSecret -}}
{{- end -}}

{{- define "imageflow.storageSecret" -}}
{{- default .Values.storage.secretName .Values.storage.existingSecret -}}
{{- end -}}

{{- define "imageflow.kafkaSecret" -}}
{{- default .Values.kafkaClient.secretName .Values.kafkaClient.existingSecret -}}
{{- end -}}

{{- define "imageflow.databaseSecret" -}}
{{- default (printf "%s-postgresql" (include "imageflow.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{/*
A random secret value that survives upgrades: the value already in the cluster
when there is one, else a new random one. Call with
(dict "root" $ "secret" NAME "key" KEY "length" 32).
*/}}
{{- define "imageflow.persistentRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/*
Environment every service shares: telemetry, storage, Kafka. Call with
(dict "root" $ "serviceName" "imageflow-resize").
*/}}
{{- define "imageflow.commonEnv" -}}
{{- $root := .root -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=imageflow,deployment.environment=%s,cloud.region=%s,k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME)" $root.Values.global.environment $root.Values.global.region | quote }}
{{- with include "imageflow.otlpEndpoint" $root }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "imageflow.storageSecret" $root }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "imageflow.storageSecret" $root }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end -}}

{{/* envFrom every service shares: its ConfigMap and the optional Kafka credentials. */}}
{{- define "imageflow.commonEnvFrom" -}}
- configMapRef:
    name: {{ .configMap }}
- secretRef:
    name: {{ include "imageflow.kafkaSecret" .root }}
    optional: true
{{- end -}}

{{/* ConfigMap data every service shares. */}}
{{- define "imageflow.sharedConfig" -}}
RUST_LOG: {{ .Values.telemetry.logLevel | quote }}
OTEL_TRACES_SAMPLER: {{ .Values.telemetry.sampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ .Values.telemetry.samplerArg | quote }}
OTEL_METRICS_EXPORTER: {{ include "imageflow.metricsExporter" . | quote }}
OTEL_LOGS_EXPORTER: {{ include "imageflow.logsExporter" . | quote }}
METRICS_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
STORAGE_URL: {{ printf "s3://%s" .Values.storage.bucket | quote }}
{{- with include "imageflow.s3Endpoint" . }}
S3_ENDPOINT: {{ . | quote }}
{{- end }}
S3_FORCE_PATH_STYLE: {{ .Values.storage.forcePathStyle | quote }}
AWS_REGION: {{ .Values.storage.region | quote }}
STORAGE_MAX_OBJECT_BYTES: {{ .Values.storage.maxObjectBytes | int64 | quote }}
{{- with include "imageflow.kafkaBrokers" . }}
KAFKA_BROKERS: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling and security shared by the workloads. */}}
{{- define "imageflow.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The pod's anti-affinity: spread replicas over nodes when it can. */}}
{{- define "imageflow.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "imageflow.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* Egress every imageflow workload needs: DNS, bundled infra, the OTLP agent, external CIDRs. */}}
{{- define "imageflow.egressCommon" -}}
# DNS
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
# MinIO, Kafka, Triton of this release
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/instance: {{ .Release.Name }}
          imageflow.io/infra: "true"
  ports:
    - {protocol: TCP, port: 9000}
    - {protocol: TCP, port: 9092}
    - {protocol: TCP, port: {{ .Values.triton.grpcPort }}}
# The OTLP collector (agent) in the monitoring namespace
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: {{ include "imageflow.monitoringNamespace" . }}}
      podSelector:
        matchLabels: {app.kubernetes.io/component: otel-agent}
  ports:
    - {protocol: TCP, port: 4317}
    - {protocol: TCP, port: 4318}
{{- with .Values.networkPolicy.externalEgressCIDRs }}
# External MinIO/S3, Kafka, PostgreSQL, Triton
- to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
{{- end }}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A memory quantity (Mi or Gi) in MiB, for GOMEMLIMIT. */}}
{{- define "imageflow.mebibytes" -}}
{{- $q := toString . -}}
{{- if hasSuffix "Gi" $q -}}{{ mul (trimSuffix "Gi" $q | int) 1024 }}
{{- else if hasSuffix "Mi" $q -}}{{ trimSuffix "Mi" $q | int }}
{{- else -}}{{ fail (printf "memory limit %q: write it in Mi or Gi" $q) }}
{{- end -}}
{{- end -}}

{{/* The S3 endpoint as seen from another namespace. */}}
{{- define "imageflow.s3EndpointFqdn" -}}
{{- if .Values.storage.endpoint -}}
{{- .Values.storage.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio.%s.svc:9000" (include "imageflow.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

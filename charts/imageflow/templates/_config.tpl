{{/* ConfigMap data of a gRPC service; (dict "root" $ "key" "resize" "svc" $svc). */}}
{{- define "imageflow.serviceConfig" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{ include "imageflow.sharedConfig" $root }}
GRPC_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int $root.Values.grpc.port) | quote }}
MAX_CONCURRENT_REQUESTS: {{ $svc.maxConcurrentRequests | quote }}
REQUEST_TIMEOUT_SECONDS: {{ $svc.requestTimeoutSeconds | quote }}
GRPC_MAX_MESSAGE_BYTES: {{ $root.Values.grpc.maxMessageBytes | int64 | quote }}
MAX_IMAGE_BYTES: {{ $root.Values.grpc.maxImageBytes | int64 | quote }}
MAX_IMAGE_PIXELS: {{ $root.Values.grpc.maxImagePixels | int64 | quote }}
SHUTDOWN_GRACE_SECONDS: {{ $root.Values.grpc.shutdownGraceSeconds | quote }}
{{- if $root.Values.grpc.tls.enabled }}
GRPC_TLS_CERT: "/etc/imageflow/grpc-tls/tls.crt"
GRPC_TLS_KEY: "/etc/imageflow/grpc-tls/tls.key"
GRPC_TLS_CLIENT_CA: "/etc/imageflow/grpc-tls/ca.crt"
GRPC_HEALTH_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int $root.Values.grpc.tls.healthPort) | quote }}
{{- end }}
{{- if gt (int $svc.cpuWorkers) 0 }}
CPU_WORKERS: {{ $svc.cpuWorkers | quote }}
{{- end }}
{{- if eq .key "aiDetect" }}
MODEL_DIR: "/models"
ORT_DYLIB_PATH: "/opt/onnxruntime/lib/libonnxruntime.so"
DEFAULT_MODEL: {{ $svc.defaultModel | quote }}
MAX_BATCH_SIZE: {{ $svc.maxBatchSize | quote }}
BATCH_WINDOW_MS: {{ $svc.batchWindowMs | quote }}
{{- if gt (int $svc.intraOpThreads) 0 }}
INTRA_OP_THREADS: {{ $svc.intraOpThreads | quote }}
{{- end }}
EXECUTION_PROVIDER: {{ ternary "cuda" "cpu" $svc.gpu.enabled | quote }}
{{- with include "imageflow.tritonUrl" $root }}
INFERENCE_BACKEND: "triton"
TRITON_URL: {{ . | quote }}
{{- else }}
INFERENCE_BACKEND: "onnx"
{{- end }}
{{- end }}
{{- end -}}

{{/* ConfigMap data of backend-api. */}}
{{- define "imageflow.backendConfig" -}}
{{- $fullname := include "imageflow.fullname" . -}}
{{- $b := .Values.backend -}}
{{ include "imageflow.sharedConfig" . }}
HTTP_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int $b.httpPort) | quote }}
{{- $tls := .Values.grpc.tls }}
{{- $scheme := ternary "https" "http" $tls.enabled }}
RESIZE_GRPC_ENDPOINT: {{ printf "%s://%s-resize:%d" $scheme $fullname (int .Values.grpc.port) | quote }}
FILTER_GRPC_ENDPOINT: {{ printf "%s://%s-filter:%d" $scheme $fullname (int .Values.grpc.port) | quote }}
AI_DETECTION_GRPC_ENDPOINT: {{ printf "%s://%s-ai-detect:%d" $scheme $fullname (int .Values.grpc.port) | quote }}
{{- if $tls.enabled }}
GRPC_TLS_CA: "/etc/imageflow/grpc-tls/ca.crt"
GRPC_TLS_CLIENT_CERT: "/etc/imageflow/grpc-tls/tls.crt"
GRPC_TLS_CLIENT_KEY: "/etc/imageflow/grpc-tls/tls.key"
{{- with $tls.serverName }}
GRPC_TLS_SERVER_NAME: {{ . | quote }}
{{- end }}
{{- end }}
EXECUTION_MODE: {{ $b.executionMode | quote }}
MAX_PARALLEL_EXECUTIONS: {{ $b.maxParallelExecutions | quote }}
MAX_QUEUED_EXECUTIONS: {{ $b.maxQueuedExecutions | quote }}
EXECUTION_TIMEOUT_SECONDS: {{ $b.executionTimeoutSeconds | quote }}
STEP_TIMEOUT_SECONDS: {{ $b.stepTimeoutSeconds | quote }}
MAX_UPLOAD_BYTES: {{ $b.maxUploadBytes | int64 | quote }}
MAX_REQUEST_BYTES: {{ $b.maxRequestBytes | int64 | quote }}
HTTP_HEADER_READ_TIMEOUT_SECONDS: {{ $b.httpHeaderReadTimeoutSeconds | quote }}
HEARTBEAT_SECONDS: {{ $b.heartbeatSeconds | quote }}
STALE_EXECUTION_SECONDS: {{ $b.staleExecutionSeconds | quote }}
SHUTDOWN_GRACE_SECONDS: {{ .Values.grpc.shutdownGraceSeconds | quote }}
UI_DIR: "/srv/ui"
{{- if .Values.jaeger.uiUrl }}
JAEGER_UI_URL: {{ .Values.jaeger.uiUrl | quote }}
{{- end }}
{{- end -}}

{{/* The data of the Secrets the chart generates, and the checksum/secret
annotation of the pods that read them. */}}

{{- define "imageflow.storageSecretData" -}}
AWS_ACCESS_KEY_ID: {{ include "imageflow.persistentRandom" (dict "root" . "secret" .Values.storage.secretName "key" "AWS_ACCESS_KEY_ID" "length" 20) | b64enc | quote }}
AWS_SECRET_ACCESS_KEY: {{ include "imageflow.persistentRandom" (dict "root" . "secret" .Values.storage.secretName "key" "AWS_SECRET_ACCESS_KEY" "length" 40) | b64enc | quote }}
{{- end -}}

{{- define "imageflow.kafkaSecretData" -}}
{{- range $k, $v := .Values.kafkaClient.credentials }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "imageflow.apiTokensSecretData" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "imageflow.apiTokensSecret" .) -}}
{{- $tokens := list -}}
{{- if and $existing (hasKey $existing.data "IMAGEFLOW_API_TOKENS") -}}
{{- $tokens = splitList "," (index $existing.data "IMAGEFLOW_API_TOKENS" | b64dec) -}}
{{- else -}}
{{- range .Values.apiTokens.names -}}
{{- $tokens = append $tokens (printf "%s:%s" . (randAlphaNum 40)) -}}
{{- end -}}
{{- end -}}
IMAGEFLOW_API_TOKENS: {{ join "," $tokens | b64enc | quote }}
{{- end -}}

{{- define "imageflow.databaseSecretData" -}}
{{- $pw := include "imageflow.persistentRandom" (dict "root" . "secret" (include "imageflow.databaseSecret" .) "key" "POSTGRES_PASSWORD" "length" 32) -}}
POSTGRES_PASSWORD: {{ $pw | b64enc | quote }}
DATABASE_URL: {{ printf "postgres://%s:%s@%s-postgresql:5432/%s" .Values.postgresql.username $pw (include "imageflow.fullname" .) .Values.postgresql.database | b64enc | quote }}
{{- end -}}

{{/*
A generated Secret's data, rendered once per release render; call with
(dict "root" $ "kind" "storage|kafka|apiTokens|database"). The random values
differ on every call, and secrets.yaml and each pod's checksum/secret must hash
the same ones, or the first upgrade after an install would roll every pod. The
templates of a chart share the root context, so the first rendering is kept
there.
*/}}
{{- define "imageflow.generatedSecretData" -}}
{{- if not (hasKey .root "imageflowGeneratedSecrets") -}}
{{- $_ := set .root "imageflowGeneratedSecrets" (dict) -}}
{{- end -}}
{{- $memo := get .root "imageflowGeneratedSecrets" -}}
{{- if not (hasKey $memo .kind) -}}
{{- $_ := set $memo .kind (include (printf "imageflow.%sSecretData" .kind) .root) -}}
{{- end -}}
{{- get $memo .kind -}}
{{- end -}}

{{/*
What a pod reads from one Secret, for its checksum/secret: the data the chart
renders, or, for a Secret made outside the chart, its name and the revision
the user bumps on rotating it (the chart cannot read its content). Call with
(dict "root" $ "kind" "storage|kafka|apiTokens|database|grpcTls").
*/}}
{{- define "imageflow.secretSource" -}}
{{- $v := .root.Values -}}
{{- if eq .kind "storage" -}}
{{- if $v.storage.existingSecret -}}
storage: {{ $v.storage.existingSecret }}@{{ $v.storage.existingSecretRevision }}
{{- else -}}
{{ include "imageflow.generatedSecretData" . }}
{{- end -}}
{{- else if eq .kind "kafka" -}}
{{- /* Without credentials the pods read kafka-credentials optionally, made by hand. */ -}}
{{- if and (not $v.kafkaClient.existingSecret) $v.kafkaClient.credentials -}}
{{ include "imageflow.generatedSecretData" . }}
{{- else -}}
kafka: {{ include "imageflow.kafkaSecret" .root }}@{{ $v.kafkaClient.existingSecretRevision }}
{{- end }}
kafkaCa: {{ $v.kafkaClient.caSecret }}@{{ $v.kafkaClient.existingSecretRevision }}
{{- else if eq .kind "apiTokens" -}}
{{- if $v.apiTokens.existingSecret -}}
apiTokens: {{ $v.apiTokens.existingSecret }}@{{ $v.apiTokens.existingSecretRevision }}
{{- else -}}
{{ include "imageflow.generatedSecretData" . }}
{{- end -}}
{{- else if eq .kind "database" -}}
{{- if $v.database.existingSecret -}}
database: {{ $v.database.existingSecret }}@{{ $v.database.existingSecretRevision }}
{{- else -}}
{{ include "imageflow.generatedSecretData" . }}
{{- end -}}
{{- else if eq .kind "grpcTls" -}}
grpcTls: {{ $v.grpc.tls.existingSecret }},{{ $v.grpc.tls.clientExistingSecret }}@{{ $v.grpc.tls.existingSecretRevision }}
{{- else -}}
{{- fail (printf "imageflow.secretSource: unknown kind %q" .kind) -}}
{{- end -}}
{{- end -}}

{{/* The checksum/secret annotation; call with (dict "root" $ "kinds" (list "storage" ...)). */}}
{{- define "imageflow.secretChecksum" -}}
{{- $root := .root -}}
{{- $sources := list -}}
{{- range .kinds -}}
{{- $sources = append $sources (include "imageflow.secretSource" (dict "root" $root "kind" .)) -}}
{{- end -}}
{{- join "\n---\n" $sources | sha256sum -}}
{{- end -}}

{{/* Names, labels and the pod template every role shares. */}}

{{- define "orders.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orders.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orders.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orders.labels" -}}
helm.sh/chart: {{ include "orders.chart" . }}
app.kubernetes.io/name: {{ include "orders.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orders
{{- end -}}

{{/* Selector labels of one role: (dict "root" $ "role" "fraud"). */}}
{{- define "orders.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orders.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "orders.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orders.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orders.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The roles the chart runs, in order, each with its values and whether it is on. */}}
{{- define "orders.roles" -}}
{{- $v := .Values -}}
{{- $roles := dict -}}
{{- $_ := set $roles "producer" (dict "on" $v.producer.enabled "consumer" false "group" "") -}}
{{- $_ := set $roles "fraud" (dict "on" $v.fraud.enabled "consumer" true "group" "fraud-group") -}}
{{- $_ := set $roles "payment" (dict "on" $v.payment.enabled "consumer" true "group" "payments-group") -}}
{{- $_ := set $roles "analytics" (dict "on" $v.analytics.enabled "consumer" true "group" "analytics-group") -}}
{{- $_ := set $roles "api" (dict "on" $v.api.enabled "consumer" false "group" "") -}}
{{- $_ := set $roles "ingest" (dict "on" $v.ingest.enabled "consumer" false "group" "") -}}
{{- toJson $roles -}}
{{- end -}}

{{/* env entry from a key of an existing Secret. */}}
{{- define "orders.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* The environment of one role: (dict "root" $ "role" "fraud"). */}}
{{- define "orders.env" -}}
{{- $v := .root.Values -}}
{{- $role := .role -}}
- name: TOPIC_NAME
  value: {{ $v.kafka.topic | quote }}
- name: ORDERS_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
- name: RUST_LOG
  value: {{ $v.rustLog | quote }}
- name: ORDERS_OPS_ADDR
  value: "0.0.0.0:9100"
- name: ORDERS_DATA_DIR
  value: /app/data
{{ include "orders.secretEnv" (dict "name" "KAFKA_BOOTSTRAP_SERVERS" "secret" $v.kafka.existingSecret "key" $v.kafka.secretKeys.bootstrapServers) }}
{{- if $v.kafka.sasl }}
{{ include "orders.secretEnv" (dict "name" "CONFLUENT_API_KEY" "secret" $v.kafka.existingSecret "key" $v.kafka.secretKeys.apiKey) }}
{{ include "orders.secretEnv" (dict "name" "CONFLUENT_API_SECRET" "secret" $v.kafka.existingSecret "key" $v.kafka.secretKeys.apiSecret) }}
{{- end }}
{{- if has $role (list "producer" "analytics" "api") }}
{{ include "orders.secretEnv" (dict "name" "COUCHBASE_HOST" "secret" $v.couchbase.existingSecret "key" $v.couchbase.secretKeys.host) }}
{{ include "orders.secretEnv" (dict "name" "COUCHBASE_BUCKET" "secret" $v.couchbase.existingSecret "key" $v.couchbase.secretKeys.bucket) }}
{{ include "orders.secretEnv" (dict "name" "COUCHBASE_USERNAME" "secret" $v.couchbase.existingSecret "key" $v.couchbase.secretKeys.username) }}
{{ include "orders.secretEnv" (dict "name" "COUCHBASE_PASSWORD" "secret" $v.couchbase.existingSecret "key" $v.couchbase.secretKeys.password) }}
- name: COUCHBASE_DURABILITY
  value: {{ $v.couchbase.durability | quote }}
{{- end }}
{{- if eq $role "producer" }}
- name: SLEEP_SECONDS
  value: {{ $v.producer.sleepSeconds | quote }}
{{- else if eq $role "fraud" }}
- name: FRAUD_THRESHOLD
  value: {{ $v.fraud.threshold | quote }}
{{- else if eq $role "payment" }}
- name: PAYMENT_DELAY_MS
  value: {{ $v.payment.delayMs | quote }}
{{- else if eq $role "api" }}
- name: ORDERS_API_ADDR
  value: "0.0.0.0:{{ $v.api.service.port }}"
- name: ORDERS_API_TRUST_FORWARDED_FOR
  value: {{ $v.api.trustForwardedFor | quote }}
{{ include "orders.secretEnv" (dict "name" "ORDERS_API_TOKENS" "secret" $v.api.existingSecret "key" $v.api.secretKeys.tokens) }}
{{ include "orders.secretEnv" (dict "name" "ORDERS_API_TOKEN" "secret" $v.api.existingSecret "key" $v.api.secretKeys.consoleToken) }}
{{- else if eq $role "ingest" }}
{{ include "orders.secretEnv" (dict "name" "POSTGRES_URL" "secret" $v.ingest.existingSecret "key" $v.ingest.secretKeys.url) }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

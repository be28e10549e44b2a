{{/* Names: <release>-ferry unless overridden, cut to the 63 characters Kubernetes names allow. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
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

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "agent"). */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferry.image" -}}
{{- printf "%s-%s:%s" .ctx.Values.image.repository .component (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the NATS and Redis URLs (credentials inside them). */}}
{{- define "ferry.secretName" -}}
{{- printf "%s-credentials" (include "ferry.fullname" .) -}}
{{- end -}}

{{- define "ferry.natsSecretName" -}}
{{- default (include "ferry.secretName" .) .Values.nats.existingSecret -}}
{{- end -}}

{{- define "ferry.redisSecretName" -}}
{{- default (include "ferry.secretName" .) .Values.redis.existingSecret -}}
{{- end -}}

{{/*
A generated password is kept across upgrades: it is read back from the release's existing Secret
(lookup returns nothing under `helm template`, where a fresh one is harmless).
Call with (dict "ctx" $ "key" "nats-password" "given" .Values.nats.auth.password).
*/}}
{{- define "ferry.password" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "ferry.secretName" .ctx) -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A principal's NATS credentials file (JSON, the format of @ferry/protocol nats-credentials.ts).
Replies come under _INBOX_<user>, the only inbox its permissions let it read (the coordinator keeps _INBOX).
Call with (dict "user" "agent" "password" $pw "caFile" "" | "/run/ferry-nats-tls/ca.crt").
*/}}
{{- define "ferry.natsCredentials" -}}
{{- $c := dict "v" 1 "user" .user "password" .password -}}
{{- if ne .user "coordinator" -}}{{- $_ := set $c "inboxPrefix" (printf "_INBOX_%s" .user) -}}{{- end -}}
{{- if .caFile -}}{{- $_ := set $c "tls" (dict "caFile" .caFile) -}}{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/*
Volumes of a pod that connects to the bundled NATS with its own credentials: the principal's
credentials file from the Secret (root-only, as the credentials reader demands) and, with TLS, the CA.
Call with (dict "ctx" $ "principal" "agent").
*/}}
{{- define "ferry.natsCredentialVolumes" -}}
{{- if .ctx.Values.nats.enabled }}
- name: nats-credentials
  secret:
    secretName: {{ include "ferry.secretName" .ctx }}
    defaultMode: 256  # 0400, in decimal: YAML parsers disagree on leading-zero octal
    items:
      - key: nats-credentials-{{ .principal }}.json
        path: credentials.json
{{- if include "ferry.natsTlsSecret" .ctx }}
- name: nats-tls-ca
  secret:
    secretName: {{ include "ferry.natsTlsSecret" .ctx }}
    defaultMode: 292  # 0444
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/*
The Secret with the bundled NATS's ca.crt, tls.crt and tls.key: the operator's (nats.tls.existingSecret),
else the one the chart generates (nats.tls.generate, the default); empty: plain TCP (or no bundled NATS).
*/}}
{{- define "ferry.natsTlsSecret" -}}
{{- if .Values.nats.enabled -}}
{{- if .Values.nats.tls.existingSecret -}}
{{- .Values.nats.tls.existingSecret -}}
{{- else if .Values.nats.tls.generate -}}
{{- printf "%s-nats-tls" (include "ferry.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Mounts of the CA for NATS TLS (the credentials file is mounted by each pod: see the templates). */}}
{{- define "ferry.natsTlsMounts" -}}
{{- if include "ferry.natsTlsSecret" . }}
- name: nats-tls-ca
  mountPath: /run/ferry-nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Fails rendering early, with a message, on combinations the schema cannot express. */}}
{{- define "ferry.validate" -}}
{{- if and .Values.nats.enabled .Values.nats.existingSecret -}}
{{- fail "nats.existingSecret is for an external NATS (nats.enabled=false): the bundled NATS uses the users the chart makes (fix their passwords with nats.auth.passwords)" -}}
{{- end -}}
{{- if and (not .Values.nats.enabled) .Values.nats.tls.existingSecret -}}
{{- fail "nats.tls.existingSecret configures the bundled NATS: for an external NATS put TLS in nats.url (tls://) and its CA in the image or extraEnv" -}}
{{- end -}}
{{- if and (not .Values.nats.enabled) (not .Values.nats.url) (not .Values.nats.existingSecret) -}}
{{- fail "nats.enabled is false: set nats.url (or nats.existingSecret) to the NATS ferry should use" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
{{- fail "redis.enabled is false: set redis.url (or redis.existingSecret) to the Redis ferry should use" -}}
{{- end -}}
{{- if and .Values.kafka.enabled (empty .Values.kafka.brokers) -}}
{{- fail "kafka.enabled is true: set kafka.brokers" -}}
{{- end -}}
{{- end -}}

{{/* Environment both the agent and the coordinator get: where NATS is, log level, Kafka. */}}
{{- define "ferry.commonEnv" -}}
- name: FERRY_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ferry.natsSecretName" . }}
      key: nats-url
{{- if .Values.nats.enabled }}
- name: FERRY_NATS_CREDENTIALS
  value: /run/ferry-nats/credentials.json
{{- end }}
- name: FERRY_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{/*
The HTTP API's bearer tokens as JSON {"viewer": "...", "operator": "..."}: given in values, else
kept from the existing Secret, else new (`ferry_` + 43 letters and digits; lookup returns nothing
under `helm template`, where a fresh one is harmless).
*/}}
{{- define "ferry.httpTokens" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-http-tokens" (include "ferry.fullname" .)) -}}
{{- $tokens := dict -}}
{{- range $role := list "viewer" "operator" -}}
{{- $key := printf "%s-token" $role -}}
{{- $given := index ($.Values.coordinator.http.tokens | default dict) $role -}}
{{- if $given -}}
{{- $_ := set $tokens $role $given -}}
{{- else if and $existing (index ($existing.data | default dict) $key) -}}
{{- $_ := set $tokens $role (index $existing.data $key | b64dec) -}}
{{- else -}}
{{- $_ := set $tokens $role (printf "ferry_%s" (randAlphaNum 43)) -}}
{{- end -}}
{{- end -}}
{{- toJson $tokens -}}
{{- end -}}

{{/*
The coordinator's tokens file (packages/coordinator/src/http-tokens.ts) for the tokens given (the
dict of ferry.httpTokens: computed once per render, since a fresh one is random): only SHA-256s.
*/}}
{{- define "ferry.httpTokensFile" -}}
{{- $t := . -}}
{{- $entries := list (dict "name" "chart-viewer" "role" "viewer" "sha256" (sha256sum $t.viewer)) (dict "name" "chart-operator" "role" "operator" "sha256" (sha256sum $t.operator)) -}}
{{- toJson (dict "v" 1 "tokens" $entries) -}}
{{- end -}}

{{/*
Names, labels, images, the programs' configuration files and the checks of
the values. Every template builds on these, so a name or a path lives in one
place.
*/}}

{{/* The chart name, or nameOverride; 63 characters at most (DNS label). */}}
{{- define "todo-backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: fullnameOverride, else <release>-<chart> (just the
release name when it already contains the chart name); 63 characters at most.
*/}}
{{- define "todo-backend.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name derived from the full name: (include "todo-backend.child" (list . "backup")). */}}
{{- define "todo-backend.child" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "todo-backend.fullname" $root | trunc (int (sub 62 (len (index . 1)))) | trimSuffix "-") (index . 1) }}
{{- end }}

{{/* chart label value: <chart>-<version>. */}}
{{- define "todo-backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "todo-backend.labels" -}}
helm.sh/chart: {{ include "todo-backend.chart" . }}
{{ include "todo-backend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: todo-backend
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the release's pods (never change them: selectors are immutable). */}}
{{- define "todo-backend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "todo-backend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (include "todo-backend.componentLabels" (list . "backup")). */}}
{{- define "todo-backend.componentLabels" -}}
{{ include "todo-backend.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Annotations of every resource (commonAnnotations), as a block or nothing. */}}
{{- define "todo-backend.annotations" -}}
{{- with .Values.commonAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "todo-backend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "todo-backend.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (include "todo-backend.image" (list . .Values.image.app)). */}}
{{- define "todo-backend.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $image.repository $tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of every pod. */}}
{{- define "todo-backend.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling of every pod: priority class, node selector, tolerations. */}}
{{- define "todo-backend.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Fixed ports and paths inside the pod (the images' and programs' contracts). */}}
{{- define "todo-backend.appApiPort" -}}3000{{- end }}
{{- define "todo-backend.appAdminPort" -}}9000{{- end }}
{{- define "todo-backend.sidecarAdminPort" -}}9001{{- end }}
{{- define "todo-backend.appConfigDir" -}}/etc/todo-app{{- end }}
{{- define "todo-backend.sidecarConfigFile" -}}/etc/todo-sidecar/sidecar.yaml{{- end }}
{{- define "todo-backend.logDir" -}}/var/log/todo{{- end }}
{{- define "todo-backend.appTlsDir" -}}/etc/todo-app/tls{{- end }}
{{- define "todo-backend.databaseCaDir" -}}/etc/todo-backend/database-ca{{- end }}
{{- define "todo-backend.sidecarSecretsDir" -}}/etc/todo-sidecar/secrets{{- end }}

{{/* The app's shutdown settings: its config's values, else the program's defaults. */}}
{{- define "todo-backend.readinessDelay" -}}
{{- $server := default dict .Values.app.config.server }}
{{- if hasKey $server "shutdown_readiness_delay_seconds" }}{{ $server.shutdown_readiness_delay_seconds | int }}{{ else }}5{{ end }}
{{- end }}
{{- define "todo-backend.shutdownTimeout" -}}
{{- $server := default dict .Values.app.config.server }}
{{- if hasKey $server "shutdown_timeout_seconds" }}{{ $server.shutdown_timeout_seconds | int }}{{ else }}30{{ end }}
{{- end }}

{{/*
The grace period the pod needs: the app's readiness delay and in-flight
timeout, any preStop sleep, then the sidecar's log drain (it is stopped only
after the app exited), plus 5 s for the processes to write their last lines.
*/}}
{{- define "todo-backend.requiredGracePeriod" -}}
{{- add (include "todo-backend.readinessDelay" . | int) (include "todo-backend.shutdownTimeout" . | int) .Values.app.preStopSleepSeconds .Values.sidecar.drainTimeoutSeconds 5 }}
{{- end }}
{{- define "todo-backend.gracePeriod" -}}
{{- if gt (int .Values.terminationGracePeriodSeconds) 0 }}{{ .Values.terminationGracePeriodSeconds }}{{ else }}{{ include "todo-backend.requiredGracePeriod" . }}{{ end }}
{{- end }}

{{/* "true" when at least one log sink is configured. */}}
{{- define "todo-backend.shippingEnabled" -}}
{{- $s := .Values.logging.sinks }}
{{- if or $s.loki.url $s.elasticsearch.url $s.otlp.url $s.stdout.enabled }}true{{ end }}
{{- end }}

{{/* Where the app's lines go: the value, else file when shipping is on, else stdout. */}}
{{- define "todo-backend.logDestination" -}}
{{- if .Values.logging.destination }}{{ .Values.logging.destination }}
{{- else if include "todo-backend.shippingEnabled" . }}file
{{- else }}stdout
{{- end }}
{{- end }}

{{/* "true" when the app writes the log file (and the sidecar ships it). */}}
{{- define "todo-backend.logToFile" -}}
{{- if has (include "todo-backend.logDestination" .) (list "file" "both") }}true{{ end }}
{{- end }}

{{/* "true" when the Deployment's sidecars mount the backup volume (local store on a shared volume). */}}
{{- define "todo-backend.sidecarMountsBackups" -}}
{{- if and .Values.backup.enabled (eq .Values.backup.store.kind "local") .Values.persistence.enabled (or (has "ReadWriteMany" .Values.persistence.accessModes) (has "ReadOnlyMany" .Values.persistence.accessModes)) }}true{{ end }}
{{- end }}

{{/* The backup claim's name. */}}
{{- define "todo-backend.backupClaimName" -}}
{{- default (include "todo-backend.child" (list . "backups")) .Values.persistence.existingClaim }}
{{- end }}

{{/* The Secret with the database password, if any. */}}
{{- define "todo-backend.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecret }}
{{- else if .Values.database.password }}{{ include "todo-backend.child" (list . "database") }}
{{- end }}
{{- end }}

{{/*
DATABASE_URL without credentials: libpq (both programs, pg_dump and
pg_restore) takes the password from PGPASSWORD, so it is never in a URL,
a ConfigMap or a values file, and needs no percent-encoding.
*/}}
{{- define "todo-backend.databaseUrl" -}}
{{- $db := .Values.database }}
{{- $url := printf "postgres://%s@%s:%d/%s?sslmode=%s" $db.user $db.host (int $db.port) $db.name $db.sslmode }}
{{- if $db.caSecret.name }}
{{- $url = printf "%s&sslrootcert=%s/%s" $url (include "todo-backend.databaseCaDir" .) $db.caSecret.key }}
{{- end }}
{{- $url }}
{{- end }}

{{/* Environment variables that reach the database, shared by every container that connects. */}}
{{- define "todo-backend.databaseEnv" -}}
- name: DATABASE_URL
  value: {{ include "todo-backend.databaseUrl" . | quote }}
{{- with include "todo-backend.databaseSecretName" . }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ if $.Values.database.existingSecret }}{{ $.Values.database.existingSecretPasswordKey }}{{ else }}password{{ end }}
{{- end }}
{{- end }}

{{/* Environment of every container running todo-app. */}}
{{- define "todo-backend.appEnv" -}}
- name: APP_ENVIRONMENT
  value: production
- name: APP_CONFIG_DIR
  value: {{ include "todo-backend.appConfigDir" . }}
{{ include "todo-backend.databaseEnv" . }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment of every container running todo-sidecar. */}}
{{- define "todo-backend.sidecarEnv" -}}
- name: SIDECAR_CONFIG_FILE
  value: {{ include "todo-backend.sidecarConfigFile" . }}
{{ include "todo-backend.databaseEnv" . }}
{{- with .Values.env.LOG_LEVEL }}
- name: LOG_LEVEL
  value: {{ . | toString | quote }}
{{- end }}
{{- range $name, $value := .Values.sidecar.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.sidecar.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* todo-app's production.yaml: the chart's keys over app.config. */}}
{{- define "todo-backend.appConfig" -}}
{{- $owned := dict
  "server" (dict "host" "0.0.0.0" "port" (include "todo-backend.appApiPort" . | int))
  "admin" (dict "host" "0.0.0.0" "port" (include "todo-backend.appAdminPort" . | int))
  "log" (dict "max_bytes" (int .Values.logging.maxBytes) "max_files" (int .Values.logging.maxFiles)) }}
{{- if include "todo-backend.logToFile" . }}
{{- $_ := set $owned.log "file" (printf "%s/app.log" (include "todo-backend.logDir" .)) }}
{{- end }}
{{- if eq (include "todo-backend.logDestination" .) "file" }}
{{- $_ := set $owned.log "stdout" false }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := set $owned "tls" (dict "cert_path" (printf "%s/tls.crt" (include "todo-backend.appTlsDir" .)) "key_path" (printf "%s/tls.key" (include "todo-backend.appTlsDir" .))) }}
{{- end }}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.app.config) $owned) }}
{{- end }}

{{/* One log sink's section of the sidecar file. */}}
{{- define "todo-backend.sinkConfig" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $sink := index $root.Values.logging.sinks $name }}
{{- $config := dict "url" $sink.url }}
{{- if $sink.tokenSecret.name }}
{{- $_ := set $config "http" (dict "auth" "bearer" "token_file" (printf "%s/%s/%s" (include "todo-backend.sidecarSecretsDir" $root) $name $sink.tokenSecret.key)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* todo-sidecar's sidecar.yaml: the chart's keys over sidecar.config. */}}
{{- define "todo-backend.sidecarConfig" -}}
{{- $b := .Values.backup }}
{{- $store := dict "kind" $b.store.kind }}
{{- if eq $b.store.kind "local" }}
{{- $_ := set $store "path" .Values.persistence.mountPath }}
{{- else }}
{{- $s3 := $b.store.s3 }}
{{- $_ := set $store "bucket" $s3.bucket }}
{{- $_ := set $store "prefix" $s3.prefix }}
{{- $_ := set $store "region" $s3.region }}
{{- $_ := set $store "path_style" $s3.pathStyle }}
{{- with $s3.endpoint }}{{ $_ := set $store "endpoint" . }}{{ end }}
{{- if $s3.credentialsSecret.name }}
{{- $dir := printf "%s/s3" (include "todo-backend.sidecarSecretsDir" .) }}
{{- $_ := set $store "access_key_id_file" (printf "%s/%s" $dir $s3.credentialsSecret.accessKeyIdKey) }}
{{- $_ := set $store "secret_access_key_file" (printf "%s/%s" $dir $s3.credentialsSecret.secretAccessKeyKey) }}
{{- end }}
{{- end }}
{{- $sidecarBackups := and $b.enabled (or (eq $b.store.kind "s3") (include "todo-backend.sidecarMountsBackups" .)) }}
{{- $paths := list }}
{{- if and (include "todo-backend.logToFile" .) (include "todo-backend.shippingEnabled" .) }}
{{- $paths = list (printf "%s/app.log" (include "todo-backend.logDir" .)) }}
{{- end }}
{{- $sinks := dict "stdout" (dict "enabled" .Values.logging.sinks.stdout.enabled) }}
{{- range $name := list "loki" "elasticsearch" "otlp" }}
{{- if (index $.Values.logging.sinks $name).url }}
{{- $_ := set $sinks $name (include "todo-backend.sinkConfig" (list $ $name) | fromYaml) }}
{{- end }}
{{- end }}
{{- with .Values.logging.sinks.loki.tenantId }}{{ $_ := set $sinks.loki "tenant_id" . }}{{ end }}
{{- if .Values.logging.sinks.elasticsearch.url }}{{ $_ := set $sinks.elasticsearch "index" .Values.logging.sinks.elasticsearch.index }}{{ end }}
{{- $owned := dict
  "admin" (dict "host" "0.0.0.0" "port" (include "todo-backend.sidecarAdminPort" . | int))
  "backup" (dict "enabled" (ternary true false (not (not $sidecarBackups))) "store" $store
      "retention" (dict "keep_last" (int $b.retention.keepLast) "daily" (int $b.retention.daily) "weekly" (int $b.retention.weekly)))
  "aggregate" (dict "app_metrics_url" (printf "http://127.0.0.1:%s/metrics" (include "todo-backend.appAdminPort" .)))
  "logship" (dict "paths" $paths "max_rotated_files" (max 10 (int .Values.logging.maxFiles)) "drain_timeout_seconds" (int .Values.sidecar.drainTimeoutSeconds) "sinks" $sinks) }}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.sidecar.config) $owned) }}
{{- end }}

{{/* The pod security context (restricted profile). */}}
{{- define "todo-backend.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* The container security context (restricted profile, read-only root). */}}
{{- define "todo-backend.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Refuses inconsistent values with a message saying what to change. Called
by every template, so `helm template` of any single file fails too.
*/}}
{{- define "todo-backend.validateValues" -}}
{{- $errors := list }}
{{- $v := .Values }}
{{- if $v.podSecurityPolicy.enabled }}
{{- $errors = append $errors "podSecurityPolicy.enabled: PodSecurityPolicy was removed in Kubernetes 1.25 and this chart does not render one. Enforce the restricted Pod Security Standard with Pod Security Admission instead: kubectl label namespace <ns> pod-security.kubernetes.io/enforce=restricted (every pod of this chart passes it). Remove podSecurityPolicy or set it to {enabled: false}" }}
{{- end }}
{{- if and (eq $v.backup.store.kind "s3") (not $v.backup.store.s3.bucket) }}
{{- $errors = append $errors "backup.store.s3.bucket: required when backup.store.kind is s3" }}
{{- end }}
{{- if and $v.backup.enabled (eq $v.backup.store.kind "local") (not $v.persistence.enabled) }}
{{- $errors = append $errors "persistence.enabled: the local backup store needs the backup volume (or set backup.store.kind to s3, or backup.enabled to false)" }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- if not $v.ingress.hosts }}
{{- $errors = append $errors "ingress.hosts: at least one host is required when ingress.enabled is true" }}
{{- end }}
{{- range $v.ingress.tls }}
{{- if not .hosts }}
{{- $errors = append $errors (printf "ingress.tls: the entry with secretName %q has no hosts" (default "" .secretName)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- $errors = append $errors (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (eq (int $v.autoscaling.targetCPUUtilizationPercentage) 0) (eq (int $v.autoscaling.targetMemoryUtilizationPercentage) 0) }}
{{- $errors = append $errors "autoscaling: set targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage (both are 0)" }}
{{- end }}
{{- $dest := include "todo-backend.logDestination" . }}
{{- if and (eq $dest "file") (not (include "todo-backend.shippingEnabled" .)) }}
{{- $errors = append $errors "logging.destination is file but no logging.sinks entry is configured: the lines would be written and never read (configure a sink, or use stdout)" }}
{{- end }}
{{- if and (eq $dest "stdout") (include "todo-backend.shippingEnabled" .) }}
{{- $errors = append $errors "logging.sinks are configured but logging.destination is stdout: the sidecar ships only the log file (use file or both)" }}
{{- end }}
{{- range $name := list "loki" "elasticsearch" "otlp" }}
{{- $sink := index $v.logging.sinks $name }}
{{- if and $sink.tokenSecret.name (not $sink.url) }}
{{- $errors = append $errors (printf "logging.sinks.%s.url: required when logging.sinks.%s.tokenSecret.name is set (a sink enabled without a URL)" $name $name) }}
{{- end }}
{{- end }}
{{- if and $v.tracing.enabled (not $v.tracing.endpoint) }}
{{- $errors = append $errors "tracing.endpoint: required when tracing.enabled is true (the OTLP/HTTP collector URL)" }}
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.secretName) }}
{{- $errors = append $errors "tls.secretName: required when tls.enabled is true (a kubernetes.io/tls Secret, e.g. from tls.certificate.create)" }}
{{- end }}
{{- if and $v.tls.certificate.create (not $v.tls.certificate.issuerRef.name) }}
{{- $errors = append $errors "tls.certificate.issuerRef.name: required when tls.certificate.create is true" }}
{{- end }}
{{- if $v.production }}
{{- if not $v.database.existingSecret }}
{{- $errors = append $errors "database.existingSecret: required in production (a Secret holding the database password; the chart never creates one in production)" }}
{{- end }}
{{- if $v.database.password }}
{{- $errors = append $errors "database.password: not allowed in production (the password would live in the values and the release history); use database.existingSecret" }}
{{- end }}
{{- if and (not $v.autoscaling.enabled) (lt (int $v.replicaCount) 2) }}
{{- $errors = append $errors "replicaCount: at least 2 in production (one pod is an outage at every rollout and node drain)" }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.minReplicas) 2) }}
{{- $errors = append $errors "autoscaling.minReplicas: at least 2 in production" }}
{{- end }}
{{- if not $v.podDisruptionBudget.enabled }}
{{- $errors = append $errors "podDisruptionBudget.enabled: required in production (node drains must not evict every replica at once)" }}
{{- end }}
{{- end }}
{{- $required := include "todo-backend.requiredGracePeriod" . | int }}
{{- if and (gt (int $v.terminationGracePeriodSeconds) 0) (lt (int $v.terminationGracePeriodSeconds) $required) }}
{{- $errors = append $errors (printf "terminationGracePeriodSeconds (%d) is shorter than the shutdown needs (%d s: readiness delay + shutdown timeout + preStop + sidecar.drainTimeoutSeconds + 5); in-flight requests or unshipped log lines would be cut. Set 0 to compute it" (int $v.terminationGracePeriodSeconds) $required) }}
{{- end }}
{{- range $key := list "port" "host" }}
{{- if hasKey (default dict $v.app.config.server) $key }}
{{- $errors = append $errors (printf "app.config.server.%s is set by the chart (the API listens on 3000 in the pod; change service.port for the Service)" $key) }}
{{- end }}
{{- if hasKey (default dict $v.app.config.admin) $key }}
{{- $errors = append $errors (printf "app.config.admin.%s is set by the chart (probes and the sidecar use 9000)" $key) }}
{{- end }}
{{- end }}
{{- if hasKey (default dict $v.app.config.database) "url" }}
{{- $errors = append $errors "app.config.database.url: never put the database URL in values; set database.host, port, name, user, sslmode and existingSecret" }}
{{- end }}
{{- if $v.app.config.tls }}
{{- $errors = append $errors "app.config.tls is set by the chart: use tls.enabled and tls.secretName" }}
{{- end }}
{{- range $key := list "file" "stdout" "max_bytes" "max_files" }}
{{- if hasKey (default dict $v.app.config.log) $key }}
{{- $errors = append $errors (printf "app.config.log.%s is set by the chart: use logging.destination, logging.maxBytes and logging.maxFiles" $key) }}
{{- end }}
{{- end }}
{{- if hasKey (default dict $v.sidecar.config.database) "url" }}
{{- $errors = append $errors "sidecar.config.database.url: never put the database URL in values; set database.*" }}
{{- end }}
{{- if (default dict $v.sidecar.config.backup).store }}
{{- $errors = append $errors "sidecar.config.backup.store is set by the chart: use backup.store" }}
{{- end }}
{{- if hasKey (default dict $v.sidecar.config.logship) "paths" }}
{{- $errors = append $errors "sidecar.config.logship.paths is set by the chart: use logging.destination and logging.sinks" }}
{{- end }}
{{- if hasKey (default dict $v.sidecar.config.logship) "drain_timeout_seconds" }}
{{- $errors = append $errors "sidecar.config.logship.drain_timeout_seconds is set by the chart: use sidecar.drainTimeoutSeconds (the pod's grace period is computed from it)" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (has "Egress" $v.networkPolicy.policyTypes) }}
{{- range $endpoint := include "todo-backend.outboundEndpoints" . | fromYamlArray }}
{{- if not $endpoint.port }}
{{- $errors = append $errors (printf "networkPolicy.endpoints.%s.port: the %s URL names no port and its scheme is neither http nor https, so the NetworkPolicy cannot allow it; give the port its pods listen on" $endpoint.name $endpoint.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.velero.enabled (not (include "todo-backend.sidecarMountsBackups" .)) (eq $v.backup.store.kind "local") }}
{{- $errors = append $errors "velero.enabled with the local backup store needs persistence.accessModes [ReadWriteMany]: Velero's pre-backup hook runs `todo-sidecar backup run` in the pods' sidecar, which must mount the backup volume Velero captures (or use backup.store.kind s3)" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\ntodo-backend: invalid values:\n- %s\n" (join "\n- " $errors)) }}
{{- end }}
{{- end }}

{{/*
Volumes that todo-sidecar's containers mount, with their mounts: its
configuration, the database CA, the S3 keys and the sink tokens (each only
when configured). (include "todo-backend.sidecarVolumes" .) and
(include "todo-backend.sidecarVolumeMounts" .).
*/}}
{{- define "todo-backend.sidecarVolumes" -}}
- name: sidecar-config
  configMap:
    name: {{ include "todo-backend.child" (list . "sidecar") }}
- name: sidecar-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.database.caSecret.name }}
- name: database-ca
  secret:
    secretName: {{ .Values.database.caSecret.name }}
    items:
      - key: {{ .Values.database.caSecret.key }}
        path: {{ .Values.database.caSecret.key }}
{{- end }}
{{- if and (eq .Values.backup.store.kind "s3") .Values.backup.store.s3.credentialsSecret.name }}
- name: s3-credentials
  secret:
    secretName: {{ .Values.backup.store.s3.credentialsSecret.name }}
{{- end }}
{{- range $name := list "loki" "elasticsearch" "otlp" }}
{{- $sink := index $.Values.logging.sinks $name }}
{{- if and $sink.url $sink.tokenSecret.name }}
- name: {{ $name }}-token
  secret:
    secretName: {{ $sink.tokenSecret.name }}
    items:
      - key: {{ $sink.tokenSecret.key }}
        path: {{ $sink.tokenSecret.key }}
{{- end }}
{{- end }}
{{- end }}

{{- define "todo-backend.sidecarVolumeMounts" -}}
- name: sidecar-config
  mountPath: {{ dir (include "todo-backend.sidecarConfigFile" .) }}
  readOnly: true
- name: sidecar-tmp
  mountPath: /tmp
{{- if .Values.database.caSecret.name }}
- name: database-ca
  mountPath: {{ include "todo-backend.databaseCaDir" . }}
  readOnly: true
{{- end }}
{{- if and (eq .Values.backup.store.kind "s3") .Values.backup.store.s3.credentialsSecret.name }}
- name: s3-credentials
  mountPath: {{ include "todo-backend.sidecarSecretsDir" . }}/s3
  readOnly: true
{{- end }}
{{- range $name := list "loki" "elasticsearch" "otlp" }}
{{- $sink := index $.Values.logging.sinks $name }}
{{- if and $sink.url $sink.tokenSecret.name }}
- name: {{ $name }}-token
  mountPath: {{ include "todo-backend.sidecarSecretsDir" $ }}/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* The backup volume of the Jobs (local store): the claim. */}}
{{- define "todo-backend.backupVolume" -}}
{{- if eq .Values.backup.store.kind "local" }}
- name: backups
  persistentVolumeClaim:
    claimName: {{ include "todo-backend.backupClaimName" . }}
{{- end }}
{{- end }}
{{- define "todo-backend.backupVolumeMount" -}}
{{- if eq .Values.backup.store.kind "local" }}
- name: backups
  mountPath: {{ .Values.persistence.mountPath }}
{{- end }}
{{- end }}

{{/*
The outbound endpoints the values configure, as a YAML list of
{name, port, to, jobs}: `name` keys networkPolicy.endpoints; `port` is the
destination pods' port (networkPolicy.endpoints.<name>.port, else the URL's,
else 80 for http and 443 for https; 0 when none can be told, which
validateValues refuses); `jobs` is true when the backup Jobs use it too.
No URL is kept: a remote_write URL may hold a password.
(include "todo-backend.outboundEndpoints" . | fromYamlArray)
*/}}
{{- define "todo-backend.outboundEndpoints" -}}
{{- $v := .Values }}
{{- $found := list }}
{{- range $name := list "loki" "elasticsearch" "otlp" }}
{{- with (index $v.logging.sinks $name).url }}
{{- $found = append $found (dict "name" $name "url" . "jobs" false) }}
{{- end }}
{{- end }}
{{- with dig "aggregate" "remote_write" "url" "" (deepCopy $v.sidecar.config) }}
{{- $found = append $found (dict "name" "remoteWrite" "url" . "jobs" false) }}
{{- end }}
{{- /* OTLP traces: the chart's own variable, and the standard ones set by hand (only `run` and `serve` export). */}}
{{- if and $v.tracing.enabled $v.tracing.endpoint }}
{{- $found = append $found (dict "name" "tracing" "url" $v.tracing.endpoint "jobs" false) }}
{{- end }}
{{- $traceVariables := list "OTEL_EXPORTER_OTLP_ENDPOINT" "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" }}
{{- range $env := list $v.env $v.sidecar.env }}
{{- range $variable := $traceVariables }}
{{- with index (default dict $env) $variable }}
{{- $found = append $found (dict "name" "tracing" "url" (toString .) "jobs" false) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $variable := concat $v.extraEnv $v.sidecar.extraEnv }}
{{- if and (has $variable.name $traceVariables) $variable.value }}
{{- $found = append $found (dict "name" "tracing" "url" (toString $variable.value) "jobs" false) }}
{{- end }}
{{- end }}
{{- if and $v.backup.enabled (eq $v.backup.store.kind "s3") }}
{{- $url := $v.backup.store.s3.endpoint | default (printf "https://s3.%s.amazonaws.com" $v.backup.store.s3.region) }}
{{- $found = append $found (dict "name" "s3" "url" $url "jobs" true) }}
{{- end }}
{{- $endpoints := list }}
{{- range $endpoint := $found }}
{{- $where := index $v.networkPolicy.endpoints $endpoint.name }}
{{- $url := urlParse $endpoint.url }}
{{- $port := int $where.port }}
{{- if not $port }}
{{- $explicit := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $explicit }}{{ $port = int $explicit }}
{{- else if eq $url.scheme "https" }}{{ $port = 443 }}
{{- else if eq $url.scheme "http" }}{{ $port = 80 }}
{{- end }}
{{- end }}
{{- $endpoints = append $endpoints (dict "name" $endpoint.name "port" $port "to" $where.to "jobs" $endpoint.jobs) }}
{{- end }}
{{- toYaml $endpoints }}
{{- end }}

{{/*
Egress rules of a NetworkPolicy: DNS, PostgreSQL (by CIDR or selector; any
address on the database port when neither is given), each configured endpoint
(todo-backend.outboundEndpoints: all of them for the API pods, the S3 store
for the Jobs) and networkPolicy.extraEgress.
(include "todo-backend.egressRules" (list . "pod")) or (list . "jobs").
*/}}
{{- define "todo-backend.egressRules" -}}
{{- $root := index . 0 }}
{{- $forJobs := eq (index . 1) "jobs" }}
{{- $np := $root.Values.networkPolicy }}
# DNS.
- to:
    - namespaceSelector:
        {{- toYaml $np.dnsNamespaceSelector | nindent 8 }}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# PostgreSQL.
{{- if or $np.database.cidrs $np.database.podSelector $np.database.namespaceSelector }}
- to:
    {{- range $np.database.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- if or $np.database.podSelector $np.database.namespaceSelector }}
    - {{- with $np.database.namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      podSelector:
        {{- toYaml (default dict $np.database.podSelector) | nindent 8 }}
    {{- end }}
  ports:
    - port: {{ $root.Values.database.port }}
      protocol: TCP
{{- else }}
- ports:
    - port: {{ $root.Values.database.port }}
      protocol: TCP
{{- end }}
{{- $rules := list }}
{{- $names := list }}
{{- range $endpoint := include "todo-backend.outboundEndpoints" $root | fromYamlArray }}
{{- if or (not $forJobs) $endpoint.jobs }}
{{- $rule := dict "ports" (list (dict "port" (int $endpoint.port) "protocol" "TCP")) }}
{{- with $endpoint.to }}{{ $_ := set $rule "to" . }}{{ end }}
{{- $rules = append $rules $rule }}
{{- $names = append $names $endpoint.name }}
{{- end }}
{{- end }}
{{- with $rules }}
# The configured endpoints: {{ $names | uniq | join ", " }} (networkPolicy.endpoints).
{{ toYaml (uniq .) }}
{{- end }}
{{- with $np.extraEgress }}
# networkPolicy.extraEgress.
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pod spec parts every Job and CronJob pod shares: restricted security
context, no API token, scheduling. (include "todo-backend.jobPodBase" .)
*/}}
{{- define "todo-backend.jobPodBase" -}}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
enableServiceLinks: false
securityContext:
  {{- include "todo-backend.podSecurityContext" . | nindent 2 }}
{{- with include "todo-backend.imagePullSecrets" . }}
{{ . }}
{{- end }}
{{- with include "todo-backend.scheduling" . }}
{{ . }}
{{- end }}
{{- end }}

{{/*
A CronJob running one todo-sidecar backup command with the pod's store
configuration: (include "todo-backend.backupCronJob" (dict "root" . "component" "backup" "schedule" "…" "args" (list …))).
*/}}
{{- define "todo-backend.backupCronJob" -}}
{{- $root := .root }}
{{- $b := $root.Values.backup }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "todo-backend.child" (list $root .component) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "todo-backend.componentLabels" (list $root .component) | nindent 4 }}
  {{- with include "todo-backend.annotations" $root }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  schedule: {{ .schedule | quote }}
  {{- with $b.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  # A run that overlaps the previous one would only find the lock held (exit 4).
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ $b.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $b.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $b.failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "todo-backend.componentLabels" (list $root .component) | nindent 8 }}
    spec:
      backoffLimit: {{ $b.backoffLimit }}
      activeDeadlineSeconds: {{ $b.activeDeadlineSeconds }}
      template:
        metadata:
          labels:
            {{- include "todo-backend.selectorLabels" $root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
          annotations:
            checksum/sidecar-config: {{ include (print $root.Template.BasePath "/configmap-sidecar.yaml") $root | sha256sum }}
        spec:
          serviceAccountName: {{ include "todo-backend.serviceAccountName" $root }}
          restartPolicy: Never
          {{- include "todo-backend.jobPodBase" $root | nindent 10 }}
          containers:
            - name: todo-sidecar
              image: {{ include "todo-backend.image" (list $root $root.Values.image.sidecar) }}
              imagePullPolicy: {{ $root.Values.image.sidecar.pullPolicy }}
              command: {{ toJson (concat (list "/usr/local/bin/todo-sidecar") .args) }}
              env:
                {{- include "todo-backend.sidecarEnv" $root | nindent 16 }}
              resources:
                {{- toYaml $b.resources | nindent 16 }}
              securityContext:
                {{- include "todo-backend.securityContext" $root | nindent 16 }}
              volumeMounts:
                {{- include "todo-backend.sidecarVolumeMounts" $root | nindent 16 }}
                {{- include "todo-backend.backupVolumeMount" $root | nindent 16 }}
          volumes:
            {{- include "todo-backend.sidecarVolumes" $root | nindent 12 }}
            {{- include "todo-backend.backupVolume" $root | nindent 12 }}
{{- end }}

{{/*
The chart's name, shortened to what a label value may hold.
*/}}
{{- define "pgtripwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: the release name alone when it already says
pgtripwire, so that `helm install pgtripwire` does not make pgtripwire-pgtripwire.
*/}}
{{- define "pgtripwire.fullname" -}}
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

{{- define "pgtripwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels of every object.
*/}}
{{- define "pgtripwire.labels" -}}
helm.sh/chart: {{ include "pgtripwire.chart" . }}
{{ include "pgtripwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgtripwire
{{- end }}

{{/*
The labels that select the detector's pods: the Deployment's selector, the PodDisruptionBudget's, the
Service's and the anti-affinity's. Immutable in a Deployment: never add to them.
*/}}
{{- define "pgtripwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgtripwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The Secret that holds the DSNs.
*/}}
{{- define "pgtripwire.secretName" -}}
{{- if .Values.secret.create }}
{{- include "pgtripwire.fullname" . }}
{{- else }}
{{- .Values.secret.existingSecret }}
{{- end }}
{{- end }}

{{/*
The container's port: http.listen's, which must name one.
*/}}
{{- define "pgtripwire.port" -}}
{{- $listen := dig "http" "listen" "" .Values.config | toString }}
{{- $port := regexFind ":[0-9]+$" $listen | trimPrefix ":" }}
{{- if or (not $port) (eq (atoi $port) 0) }}
{{- fail (printf "config.http.listen %q: want host:port with a fixed port, e.g. \":9473\" (every interface): the kubelet's probes and Prometheus connect to it" $listen) }}
{{- end }}
{{- atoi $port }}
{{- end }}

{{/*
Does the configuration watch a fleet (targets:)? Then there is no database.dsn for
PGTRIPWIRE_DSN to replace, and the loader refuses it.
*/}}
{{- define "pgtripwire.fleet" -}}
{{- if dig "targets" nil .Values.config }}true{{ end }}
{{- end }}

{{/*
Is config.high_availability.enabled true?
*/}}
{{- define "pgtripwire.highAvailability" -}}
{{- if dig "high_availability" "enabled" false .Values.config }}true{{ end }}
{{- end }}

{{/*
Refuses the values that would make a detector that cannot start, a DSN in a ConfigMap,
or replicas that all page: each with the value to set.
*/}}
{{- define "pgtripwire.validate" -}}
{{- if not (and .Values.image.repository (or .Values.image.tag .Values.image.digest)) }}
{{- fail "image.repository and image.tag (or image.digest) are required: no pgtripwire image is published; build the repository's Dockerfile and push it to your registry" }}
{{- end }}
{{- if and (not (dig "sensitive" nil .Values.config)) (not (include "pgtripwire.fleet" .)) }}
{{- fail "config.sensitive is required: the tables and columns whose bulk reads page (docs/config.md#sensitive-required), e.g. [{table: public.users, columns: [email, password_hash]}]" }}
{{- end }}
{{- if dig "database" "dsn" "" .Values.config }}
{{- fail "config.database.dsn: a DSN must not be in the ConfigMap; set secret.dsn (or secret.existingSecret), which the chart passes as PGTRIPWIRE_DSN" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "pgtripwire.highAvailability" .)) }}
{{- fail (printf "replicaCount %d needs config.high_availability.enabled: true: without advisory locks every replica watches every target and pages for every read" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.secret.create .Values.secret.existingSecret }}
{{- fail "secret.existingSecret is set but secret.create is true: set secret.create=false to use the existing Secret, or leave existingSecret empty" }}
{{- end }}
{{- if include "pgtripwire.fleet" . }}
{{- if and .Values.secret.create .Values.secret.dsn }}
{{- fail "secret.dsn is set but config.targets names the servers: pgtripwire refuses PGTRIPWIRE_DSN with targets; put each server's DSN (without password) in config.targets and the passwords in a pgpass file (extraVolumes, extraEnv PGPASSFILE)" }}
{{- end }}
{{- else if .Values.secret.create }}
{{- if not .Values.secret.dsn }}
{{- fail "secret.dsn is required: the DSN of the watched database, e.g. postgres://pgtripwire:PASSWORD@db:5432/app (passed as PGTRIPWIRE_DSN); or set secret.create=false and secret.existingSecret to a Secret holding it under secret.keys.dsn" }}
{{- end }}
{{- else if not .Values.secret.existingSecret }}
{{- fail "secret.existingSecret is required with secret.create=false: the name of a Secret holding the DSN under secret.keys.dsn (or set secret.create=true and secret.dsn)" }}
{{- end }}
{{- end }}

{{/*
The configuration file, as the detector reads it.
*/}}
{{- define "pgtripwire.config" -}}
{{- include "pgtripwire.validate" . }}
{{- toYaml .Values.config }}
{{- end }}

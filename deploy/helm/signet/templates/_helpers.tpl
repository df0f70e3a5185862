{{/*
Object names are fixed (signet-server, signet-agent, ...), as in
deploy/base: the agents, the CSI driver and the cluster-wide RBAC exist once
per cluster, and a release can take over from `kubectl apply -k` objects.
*/}}

{{/* Labels on every object; selectors use only app.kubernetes.io/name. */}}
{{- define "signet.labels" -}}
app.kubernetes.io/part-of: signet
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Signet image with its tag (the appVersion unless image.tag). */}}
{{- define "signet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "signet.imagePullPolicy" -}}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end -}}

{{/* --log-level for the node components, when set. */}}
{{- define "signet.logLevelArg" -}}
{{- with .Values.logLevel }}
- --log-level={{ . }}
{{- end }}
{{- end -}}

{{/* Pod scheduling: nodeSelector, tolerations, affinity, priority. */}}
{{- define "signet.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The PostgreSQL URL goes into a ConfigMap: refuse one carrying a password
(it belongs in datastore.postgres.existingSecret).
*/}}
{{- define "signet.postgresURL" -}}
{{- $url := required "datastore.postgres.url is required with datastore.type postgres" .Values.datastore.postgres.url -}}
{{- if contains ":" ((urlParse $url).userinfo | default "") -}}
{{- fail "datastore.postgres.url must not hold a password: it would be stored in a ConfigMap; put the password in the Secret datastore.postgres.existingSecret" -}}
{{- end -}}
{{- if contains "password=" $url -}}
{{- fail "datastore.postgres.url must not hold a password parameter: put the password in the Secret datastore.postgres.existingSecret" -}}
{{- end -}}
{{- if .Values.datastore.postgres.caSecret -}}
{{- if contains "sslrootcert=" $url -}}
{{- fail "datastore.postgres.url sets sslrootcert: with datastore.postgres.caSecret the chart sets it to the mounted CA" -}}
{{- end -}}
{{- $url = printf "%s%ssslrootcert=/etc/signet/postgres/ca.crt" $url (ternary "&" "?" (contains "?" $url)) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/*
jwtIssuer, or nothing when unset, refused unless the server would take it
as jwt_issuer (no query, fragment, user info or trailing /: relying parties
compare iss byte for byte) and it is https: in a cluster there is no
loopback issuer, and relying parties fetch the keys from it.
*/}}
{{- define "signet.jwtIssuer" -}}
{{- $iss := .Values.jwtIssuer -}}
{{- if and .Values.oidcDiscovery.enabled (not $iss) -}}
{{- fail "oidcDiscovery.enabled needs jwtIssuer: the https URL relying parties know this issuer by, e.g. --set jwtIssuer=https://oidc.example.org" -}}
{{- end -}}
{{- if $iss -}}
{{- if not (hasPrefix "https://" $iss) -}}
{{- fail (printf "jwtIssuer %q must be an https URL such as https://oidc.example.org: relying parties fetch the keys from it" $iss) -}}
{{- end -}}
{{- if not (regexMatch `^https://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]+)?(/[^?#\s]*[^/?#\s])?$` $iss) -}}
{{- fail (printf "jwtIssuer %q: want https://host[:port][/path] with no user info, query, fragment or trailing / (relying parties compare it byte for byte)" $iss) -}}
{{- end -}}
{{- $iss -}}
{{- end -}}
{{- end -}}

{{/* The OIDC discovery Service's port: service.port, else by scheme. */}}
{{- define "signet.oidcServicePort" -}}
{{- .Values.oidcDiscovery.service.port | default (ternary 443 80 (ne .Values.oidcDiscovery.tls.secretName "")) -}}
{{- end -}}

{{/*
A string as an HCL (v1) string literal that reads back as the same string,
whatever it holds: `quote` escapes quotes, backslashes and control
characters as Go does, which HCL reads alike; `$` is escaped too, since HCL
would take "${" as the start of an interpolation and copy what follows
unescaped.
*/}}
{{- define "signet.hclString" -}}
{{ toString . | quote | replace "$" "\\u0024" }}
{{- end -}}

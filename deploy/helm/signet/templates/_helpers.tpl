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

{{/*
Where the servers' pods mount the upstream agents' socket directory
(upstream.enabled): upstream_authority "signet"'s workload_api_socket is
agent.sock in it.
*/}}
{{- define "signet.upstreamSocketDir" -}}
/run/signet/upstream
{{- end -}}

{{/*
downstreamClusters with defaults filled in and refused when two share a
name or one takes this cluster's own k8s_psat name (server.conf would hold
two k8s_psat blocks of that name): a JSON list of {name, kubeconfigSecret,
kubeconfigKey, kubeconfigDir, namespace, spiffeID, volume}.
*/}}
{{- define "signet.downstreamClusters" -}}
{{- $out := list }}
{{- $seen := dict .Values.clusterName "clusterName" }}
{{- range $i, $d := .Values.downstreamClusters }}
{{- with get $seen $d.name }}
{{- fail (printf "downstreamClusters[%d].name %q is already %s: each k8s_psat cluster needs its own name" $i $d.name (ternary "this cluster's clusterName" "another downstream cluster's" (eq . "clusterName"))) }}
{{- end }}
{{- $_ := set $seen $d.name "downstream" }}
{{- with $d.spiffeID }}
{{- /* As the controller (k8sreg) and `entry create` would judge it. */}}
{{- $path := trimPrefix (printf "spiffe://%s" $.Values.trustDomain) . }}
{{- if or (not (hasPrefix (printf "spiffe://%s/" $.Values.trustDomain) .)) (not (regexMatch "^(/[A-Za-z0-9._-]+)+$" $path)) (regexMatch `/\.\.?(/|$)` $path) (gt (len .) 2048) }}
{{- fail (printf "downstreamClusters[%d].spiffeID %q is not a workload ID of trust domain %s (spiffe://%[3]s/ then path segments of letters, digits, '.', '_' and '-', none . or ..)" $i . $.Values.trustDomain) }}
{{- end }}
{{- if or (eq $path "/signet") (hasPrefix "/signet/" $path) }}
{{- fail (printf "downstreamClusters[%d].spiffeID %q: paths under /signet/ are reserved for Signet itself" $i .) }}
{{- end }}
{{- end }}
{{- $out = append $out (dict
    "name" $d.name
    "kubeconfigSecret" $d.kubeconfigSecret
    "kubeconfigKey" ($d.kubeconfigKey | default "kubeconfig")
    "kubeconfigDir" (printf "/etc/signet/clusters/%s" $d.name)
    "namespace" ($d.namespace | default "signet-system")
    "spiffeID" ($d.spiffeID | default (printf "spiffe://%s/server/%s" $.Values.trustDomain $d.name))
    "volume" (printf "downstream-kubeconfig-%d" $i)) }}
{{- end }}
{{- toJson $out }}
{{- end -}}

{{/* The upstream agents' socket directory on the host. */}}
{{- define "signet.upstreamHostSocketDir" -}}
/run/signet/upstream-sockets
{{- end -}}

{{/* The node alias of a downstream cluster's upstream agents: (list $ item). */}}
{{- define "signet.downstreamAgentsID" -}}
{{- $ := index . 0 -}}
{{ printf "spiffe://%s/k8s/%s/upstream-agents" $.Values.trustDomain (index . 1).name }}
{{- end -}}

{{/*
The selectors of a downstream cluster's servers, as its upstream agents'
Kubernetes workload attestor sees them: the server container of the
signet-server pods in the downstream release's namespace. A JSON list.
*/}}
{{- define "signet.downstreamSelectors" -}}
{{- list (printf "k8s:ns:%s" .namespace) "k8s:sa:signet-server" "k8s:container-name:signet-server" | toJson }}
{{- end -}}

{{/*
The name of this cluster's k8s_psat block at the upstream (upstream.enabled):
upstream.clusterName, else clusterName. The upstream's downstreamClusters[].name,
which names objects there, so a DNS label.
*/}}
{{- define "signet.upstreamClusterName" -}}
{{- $name := .Values.upstream.clusterName | default .Values.clusterName }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $name) }}
{{- fail (printf "clusterName %q (upstream.clusterName's default) cannot be the upstream's downstreamClusters[].name, a DNS label: set upstream.clusterName to one (lower-case letters, digits and '-')" $name) }}
{{- end }}
{{- $name }}
{{- end -}}

{{/*
The release's full name: the release name, or <release>-treffpunkt when the release name does
not already say treffpunkt. Kubernetes names are at most 63 characters.
*/}}
{{- define "treffpunkt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; commonLabels add to them but never replace the chart's own. */}}
{{- define "treffpunkt.labels" -}}
{{- $labels := dict
  "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_")
  "app.kubernetes.io/part-of" "treffpunkt"
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/managed-by" .Release.Service -}}
{{- with .Chart.AppVersion }}
{{- $_ := set $labels "app.kubernetes.io/version" . }}
{{- end }}
{{- toYaml (merge $labels (deepCopy (default (dict) .Values.commonLabels))) -}}
{{- end -}}

{{/* The control plane's labels; on its pods, podLabels add to them. */}}
{{- define "treffpunkt.operatorLabels" -}}
{{- $labels := fromYaml (include "treffpunkt.labels" .) -}}
{{- $_ := set $labels "app.kubernetes.io/name" "treffpunkt-operator" -}}
{{- toYaml $labels -}}
{{- end -}}

{{- define "treffpunkt.operatorPodLabels" -}}
{{- $labels := fromYaml (include "treffpunkt.operatorLabels" .) -}}
{{- toYaml (merge $labels (deepCopy (default (dict) .Values.operator.podLabels))) -}}
{{- end -}}

{{/* The labels that select the control plane's pods (treffpunkt.labels has the second). */}}
{{- define "treffpunkt.selectorLabels" -}}
app.kubernetes.io/name: treffpunkt-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "treffpunkt.serviceAccountName" -}}
{{- default (include "treffpunkt.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The headless Service media nodes dial: it names every control-plane replica. */}}
{{- define "treffpunkt.attachService" -}}
{{- printf "%s-attach" (include "treffpunkt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "treffpunkt.attachAddress" -}}
{{- printf "http://%s.%s.svc:%d" (include "treffpunkt.attachService" .) .Release.Namespace (int .Values.ports.grpc) -}}
{{- end -}}

{{/* The Lease of leader election and the Secret with the grant key (made by the operator). */}}
{{- define "treffpunkt.leaseName" -}}
{{- printf "%s-operator" (include "treffpunkt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "treffpunkt.grantKeySecret" -}}
{{- printf "%s-grant-key" (include "treffpunkt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ClusterRole with the operator's rights on Secrets, bound in each tenant namespace. */}}
{{- define "treffpunkt.tenantSecretsRole" -}}
{{- printf "%s-tenant-secrets" (include "treffpunkt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; the tag defaults to appVersion. */}}
{{- define "treffpunkt.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The address people open. */}}
{{- define "treffpunkt.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- else -}}
http://localhost:8080
{{- end -}}
{{- end -}}

{{- define "treffpunkt.tlsSecret" -}}
{{- default (printf "%s-tls" (include "treffpunkt.fullname" .)) .Values.ingress.tls.secretName -}}
{{- end -}}

{{/* coturn run by the chart: its objects' name, labels and configuration. */}}
{{- define "treffpunkt.turnName" -}}
{{- printf "%s-turn" (include "treffpunkt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "treffpunkt.turnSelectorLabels" -}}
app.kubernetes.io/name: treffpunkt-turn
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "treffpunkt.turnLabels" -}}
{{- $labels := fromYaml (include "treffpunkt.labels" .) -}}
{{- $_ := set $labels "app.kubernetes.io/name" "treffpunkt-turn" -}}
{{- toYaml $labels -}}
{{- end -}}

{{/*
coturn's configuration: TLS on 5349 only (the Service maps 443), time-limited credentials of the
shared secret, no relaying except over UDP to the media nodes (no TCP relays, RFC 6062: media
needs none, and they would reach the nodes' other TCP ports), nothing logged.
*/}}
{{- define "treffpunkt.turnConfig" -}}
tls-listening-port=5349
no-udp
no-tcp
no-dtls
no-tlsv1
no-tlsv1_1
cert=/etc/treffpunkt-turn-tls/tls.crt
pkey=/etc/treffpunkt-turn-tls/tls.key
use-auth-secret
static-auth-secret={{ .secret }}
realm=treffpunkt
fingerprint
total-quota={{ .server.maxSessions }}
max-bps={{ .server.maxBytesPerSecond }}
no-multicast-peers
no-tcp-relay
denied-peer-ip=0.0.0.0-255.255.255.255
denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
{{- range .server.peerAddresses }}
allowed-peer-ip={{ . }}
{{- end }}
no-cli
log-file=/dev/null
no-stdout-log
pidfile=/var/run/treffpunkt-turn/turnserver.pid
userdb=/var/run/treffpunkt-turn/turndb
{{- end -}}

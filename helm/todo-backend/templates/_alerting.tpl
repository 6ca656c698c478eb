{{- /*
Helpers of the alert rules in files/alerts/*.rules.yaml (a symlink to the
repository's alerts/): the rule files are templates rendered with `tpl`, so
their thresholds come from `.Values.alerting`. Used by prometheusrule.yaml
and, through the same render, by the tests (tests/monitoring/render_rules.py).
*/ -}}

{{- /*
The rule groups of every files/alerts/*.rules.yaml, rendered, as YAML
`groups: [...]` (files in name order, groups in file order).
*/ -}}
{{- define "todo-backend.alerting.groups" -}}
{{- $groups := list -}}
{{- range $path, $_ := .Files.Glob "files/alerts/*.rules.yaml" -}}
{{- $rendered := tpl ($.Files.Get $path) $ | fromYaml -}}
{{- if hasKey $rendered "Error" -}}
{{- fail (printf "%s does not render to YAML: %s" $path $rendered.Error) -}}
{{- end -}}
{{- $groups = concat $groups $rendered.groups -}}
{{- end -}}
{{- if not $groups -}}
{{- fail "no rule groups found in files/alerts/*.rules.yaml (is the symlink to alerts/ in place?)" -}}
{{- end -}}
{{- dict "groups" $groups | toYaml -}}
{{- end -}}

{{- /*
A duration of the rule files ("30s", "5m", "1h", "26h", "8d") in seconds.
*/ -}}
{{- define "todo-backend.alerting.seconds" -}}
{{- $duration := toString . -}}
{{- if not (regexMatch "^[0-9]+[smhd]$" $duration) -}}
{{- fail (printf "alerting: %q is not a duration like 30s, 5m, 26h or 8d" $duration) -}}
{{- end -}}
{{- $count := regexFind "^[0-9]+" $duration | int -}}
{{- $unit := regexFind "[smhd]$" $duration -}}
{{- mul $count (get (dict "s" 1 "m" 60 "h" 3600 "d" 86400) $unit) -}}
{{- end -}}

{{- /*
Seconds as a Prometheus duration in the largest whole unit: 3600 → 1h.
*/ -}}
{{- define "todo-backend.alerting.formatDuration" -}}
{{- $seconds := int . -}}
{{- if eq (mod $seconds 86400) 0 -}}{{ div $seconds 86400 }}d
{{- else if eq (mod $seconds 3600) 0 -}}{{ div $seconds 3600 }}h
{{- else if eq (mod $seconds 60) 0 -}}{{ div $seconds 60 }}m
{{- else -}}{{ $seconds }}s
{{- end -}}
{{- end -}}

{{- /*
A range window or `for:` duration of the rules, times `alerting.timeScale`
(the one knob the drills turn to make alerts fire in seconds; 1 in
production), rounded to a whole second, at least 1s. Call as (list $ "5m").
*/ -}}
{{- define "todo-backend.alerting.window" -}}
{{- $root := index . 0 -}}
{{- $seconds := include "todo-backend.alerting.seconds" (index . 1) | int -}}
{{- $scaled := round (mulf $seconds $root.Values.alerting.timeScale) 0 | int -}}
{{- include "todo-backend.alerting.formatDuration" (max $scaled 1) -}}
{{- end -}}

{{- /*
The label matchers of an SLO error: a 5xx, without 503 unless
`alerting.slo.availability.countRetryable503`.
*/ -}}
{{- define "todo-backend.alerting.errorMatchers" -}}
status=~"5.."{{ if not .Values.alerting.slo.availability.countRetryable503 }},status!="503"{{ end }}
{{- end -}}

{{- /*
A ratio as a percentage for humans: 0.001 → 0.1%.
*/ -}}
{{- define "todo-backend.alerting.percent" -}}
{{ round (mulf . 100) 4 }}%
{{- end -}}

{{- /*
The runbook of an alert: (list $ "anchor") → <alerting.runbookBaseUrl>#anchor.
*/ -}}
{{- define "todo-backend.alerting.runbook" -}}
{{- $root := index . 0 -}}
{{ $root.Values.alerting.runbookBaseUrl }}#{{ index . 1 }}
{{- end -}}

{{- /*
The name of the chart's HorizontalPodAutoscaler, as kube-state-metrics labels it.
*/ -}}
{{- define "todo-backend.alerting.hpaName" -}}
{{ include "todo-backend.fullname" . }}
{{- end -}}

{{- /*
The name of one of the chart's backup CronJobs, as kube-state-metrics labels
it (`cronjob`, and `owner_name` of its Jobs): (list $ "backup") or
(list $ "restore-drill"), the components cronjob-*.yaml render.
*/ -}}
{{- define "todo-backend.alerting.cronJobName" -}}
{{ include "todo-backend.child" (list (index . 0) (index . 1)) }}
{{- end -}}

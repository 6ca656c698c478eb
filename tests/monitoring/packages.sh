# Debian packages of tests/monitoring (sourced by scripts/test.sh):
# promtool and a real Prometheus (rule checks and unit tests, PromQL parse
# checks), Alertmanager and amtool (the example routing and inhibition).
ensure_packages prometheus prometheus-alertmanager

# Debian packages of the whole-pod drills (sourced by scripts/test.sh, which
# provides ensure_packages): a PostgreSQL server the drills run their own
# clusters with, psql and pg_dump, Prometheus and Alertmanager, and mount,
# runuser and ps for the faults they inject.
ensure_packages postgresql postgresql-client prometheus prometheus-alertmanager util-linux mount procps

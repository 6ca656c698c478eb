# syntax=docker/dockerfile:1
#
# The two images of todo-backend, one target each:
#
#   docker buildx build --target todo-app     -t ghcr.io/todo-backend/todo-app:dev .
#   docker buildx build --target todo-sidecar -t ghcr.io/todo-backend/todo-sidecar:dev .
#   buildah bud --target todo-app -t todo-app:dev .        (no daemon needed)
#
# One file for both because both binaries come out of one `cargo build` of
# the workspace's three crates: todo-app and todo-sidecar both depend on
# todo-common (common/) and on most of the same dependency tree, so two
# Dockerfiles would compile those twice. (todo-app is only a dev-dependency of
# the sidecar, for its tests: the sidecar binary does not link it.)
# docs/release.md has the details.
#
# Build arguments:
#   VERSION, REVISION, SOURCE   the OCI labels (the release workflow sets them
#                               from the tag and the commit)
#   RUST_IMAGE, DEBIAN_IMAGE    the base images (mirrors, pinned digests)
#
# Binaries built elsewhere (for Debian bookworm) instead of the build stage:
# a build context named `binaries` replaces the stage of that name, e.g.
#   --build-context binaries=target/release
# (a folder holding todo-app and todo-sidecar; tests/images does this).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim

# --- build: the release binaries, dependencies in their own cached layer ---
FROM ${RUST_IMAGE} AS build
# libpq-dev: diesel links libpq. pkg-config finds it. (Unpinned: .hadolint.yaml
# says why, DL3008.)
RUN apt-get -o Acquire::Retries=3 update \
    && apt-get -o Acquire::Retries=3 install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, against empty crates: this layer changes only when a
# manifest or the lock file does, so a source change recompiles our three
# crates, not the few hundred below them.
COPY Cargo.toml Cargo.lock ./
COPY app/Cargo.toml app/build.rs app/
COPY common/Cargo.toml common/
COPY sidecar/Cargo.toml sidecar/
RUN mkdir -p app/src common/src sidecar/src \
    && echo 'fn main() {}' > app/src/main.rs && touch app/src/lib.rs \
    && touch common/src/lib.rs \
    && echo 'fn main() {}' > sidecar/src/main.rs && touch sidecar/src/lib.rs \
    && cargo build --release --locked -p todo-app -p todo-sidecar \
    && rm -rf app/src common/src sidecar/src
COPY configuration/base.yaml configuration/
COPY migrations migrations
COPY sidecar/configuration sidecar/configuration
COPY app/src app/src
COPY common/src common/src
COPY sidecar/src sidecar/src
ARG REVISION=unknown
# The copied sources keep their original times, older than the empty
# crates' build: touch them, or cargo would keep the empty binaries (which
# print nothing for --version: the last two lines check that they went).
RUN find app/src common/src sidecar/src -name '*.rs' -exec touch {} + \
    && TODO_GIT_REVISION="${REVISION}" cargo build --release --locked -p todo-app -p todo-sidecar \
    && test -n "$(target/release/todo-app --version)" \
    && test -n "$(target/release/todo-sidecar --version)"

# --- binaries: the two programs at the root (replaceable, see the top) ---
FROM scratch AS binaries
COPY --from=build /src/target/release/todo-app /src/target/release/todo-sidecar /

# --- todo-app: the API ---
FROM ${DEBIAN_IMAGE} AS todo-app
# libpq5: diesel's PostgreSQL client library. ca-certificates: the roots
# that verify an https:// OTLP collector and, with sslrootcert, PostgreSQL.
# Versions are not pinned: bookworm's security updates replace them, and a
# pin would break the next build instead of picking up the fix (.hadolint.yaml
# skips DL3008 for that reason).
RUN apt-get -o Acquire::Retries=3 update \
    && apt-get -o Acquire::Retries=3 install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 todo \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin todo
COPY --from=binaries /todo-app /usr/local/bin/todo-app
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/todo-backend/todo-backend
LABEL org.opencontainers.image.title="todo-app" \
      org.opencontainers.image.description="The todo HTTP API of todo-backend" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 1000:1000
EXPOSE 3000 9000
# No HEALTHCHECK: Kubernetes probes /health/live and /health/ready on :9000.
ENTRYPOINT ["/usr/local/bin/todo-app"]
CMD ["serve"]

# --- todo-sidecar: backups, log shipping, metric aggregation ---
FROM ${DEBIAN_IMAGE} AS todo-sidecar
# postgresql-client-15: pg_dump and pg_restore of the supported server major
# (docs/backups.md; bookworm's own), which pull libpq5. ca-certificates: the
# roots for S3 and the log and metrics sinks over https.
RUN apt-get -o Acquire::Retries=3 update \
    && apt-get -o Acquire::Retries=3 install -y --no-install-recommends postgresql-client-15 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 todo \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin todo \
    && install -d -o 1000 -g 1000 -m 0750 /var/lib/todo-sidecar /var/lib/todo-sidecar/backups /var/lib/todo-sidecar/logship
# The default backup store and log shipping checkpoint live under
# /var/lib/todo-sidecar (the chart mounts volumes there; created here so a
# plain `docker run` works too).
# The real pg_dump and pg_restore first on PATH, not Debian's Perl wrappers
# in /usr/bin that pick a version from the clusters on the machine.
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=binaries /todo-sidecar /usr/local/bin/todo-sidecar
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/todo-backend/todo-backend
LABEL org.opencontainers.image.title="todo-sidecar" \
      org.opencontainers.image.description="The ops sidecar of todo-backend: backups, log shipping, metric aggregation" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 1000:1000
EXPOSE 9001
# No HEALTHCHECK: Kubernetes probes /health/live and /health/ready on :9001.
ENTRYPOINT ["/usr/local/bin/todo-sidecar"]
CMD ["run"]

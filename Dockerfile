# queue-pump container image.
#
#   docker build -t queue-pump:local .
#   docker run --rm --env-file .env queue-pump:local            # runs the pump (default command)
#   docker run --rm --env-file .env queue-pump:local config     # any subcommand works the same way
#   docker exec <container> queue-pump status                    # ask a running pump
#
# Two stages: the builder makes a virtualenv from requirements.lock (pinned, every file's sha256
# checked) plus the project itself; the final image copies only that venv onto a clean base, so
# no pip cache, sources or build backend end up in it. No secret is ever passed to the build:
# the pump reads SUPABASE_URL / AGENT_TOKEN / ORGANIZATION_ID from the environment at run time.
#
# For production, pin the base by digest: --build-arg PYTHON_IMAGE=python:3.12-slim@sha256:...
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/queue-pump
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
# --only-binary: every locked package ships wheels, nothing is compiled (no compiler here).
COPY requirements.lock ./
RUN /opt/queue-pump/bin/pip install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: -r requirements.lock
# Then the project, built with the locked setuptools (no build isolation = no unpinned download),
# after which the build backend leaves the venv.
COPY pyproject.toml README* ./
COPY queue_pump ./queue_pump
RUN /opt/queue-pump/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-index . \
 && /opt/queue-pump/bin/pip uninstall --yes setuptools \
 && /opt/queue-pump/bin/queue-pump --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="queue-pump" \
      org.opencontainers.image.description="Always-on sidecar that keeps calling a job runner endpoint"
RUN groupadd --gid 10001 queue-pump \
 && useradd --uid 10001 --gid queue-pump --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin queue-pump
COPY --from=builder /opt/queue-pump /opt/queue-pump
# HEALTH_HOST: the health endpoint must listen beyond the container's own loopback for
# orchestrator checks (nothing is published unless you ask for it).
ENV PATH=/opt/queue-pump/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QUEUE_PUMP_HEALTH_HOST=0.0.0.0 \
    QUEUE_PUMP_HEALTH_PORT=8080
# No .env is ever read from here: configuration comes from the environment only.
WORKDIR /opt/queue-pump
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["queue-pump", "healthcheck"]
STOPSIGNAL SIGTERM
# Exec form: Python is PID 1 and gets SIGTERM itself (its handlers let calls in flight finish).
ENTRYPOINT ["queue-pump"]
CMD ["run"]

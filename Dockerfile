# syntax=docker/dockerfile:1
# stream-worker: multi-stage build, slim runtime, non-root, exec-form entry point.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Everything from lock files, each package checked against its hash (`make lock` writes
# both): the project's wheel is built in a throwaway venv by the locked build tools (no
# build isolation: nothing fetched unpinned), then the runtime venv gets the locked
# dependencies and the wheel without resolving anything again. Two builds of one commit
# hold the same Python packages; the base image is whatever its tag points at (pin it by
# digest, python:3.11-slim-bookworm@sha256:..., for byte-for-byte rebuilds).
COPY requirements.lock requirements-build.lock pyproject.toml README.md ./
COPY worker ./worker
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-compile --require-hashes --requirement requirements-build.lock \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /opt/wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile --require-hashes --requirement requirements.lock \
 && /opt/venv/bin/pip install --no-compile --no-deps /opt/wheels/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAM_WORKER_CONFIG=/etc/stream-worker/worker.yaml
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
COPY config/worker.yaml /etc/stream-worker/worker.yaml
WORKDIR /app
USER 10001:10001
EXPOSE 9400
# Exec form: the worker is PID 1 and installs its own SIGTERM handler (graceful stop).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["stream-worker", "healthcheck"]
ENTRYPOINT ["stream-worker"]
CMD ["run"]

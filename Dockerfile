# syntax=docker/dockerfile:1.7
# One image for every TaskHub process: api, worker, relay, beat, migrate,
# operator, bootstrap-admin (`taskhub <subcommand>`).
#
#   docker build -t taskhub:dev .
#   docker run --rm --read-only --tmpfs /tmp -p 8000:8000 taskhub:dev api
#
# Pin the base by digest in CI with
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: resolve the locked dependencies into /app/.venv -----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /src

# Dependencies first: this layer is reused until uv.lock changes. Every
# dependency ships manylinux wheels, so no compiler is needed even here.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --no-editable

# Then the project itself, installed as a wheel (not editable) so the
# runtime stage needs no source tree besides the migrations.
COPY README.md alembic.ini ./
COPY api ./api
COPY workers ./workers
COPY operator ./operator
RUN uv sync --frozen --no-dev --no-editable

# ---- runtime: slim, no build tools, non-root, read-only root filesystem -----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="taskhub" \
      org.opencontainers.image.description="TaskHub API, workers, relay, beat and migrations" \
      org.opencontainers.image.source="https://github.com/taskhub/taskhub"

# Bytecode is compiled at build time (UV_COMPILE_BYTECODE); nothing writes
# next to the code at run time. /tmp is the only writable path (an emptyDir
# in Kubernetes).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    TMPDIR=/tmp

RUN groupadd --system --gid 10001 taskhub \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin taskhub

WORKDIR /app

# Owned by root and not writable by the runtime user.
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY api/migrations ./api/migrations

USER 10001:10001

# API (uvicorn) and worker metrics.
EXPOSE 8000 9807 9808 9809 9810

ENTRYPOINT ["taskhub"]
CMD ["api"]

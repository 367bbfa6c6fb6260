# Hurricane's base image: Django on Kubernetes, `FROM blueshoe/hurricane:py3.11`.
#
#   docker buildx bake                          every Python version (docker-bake.hcl)
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim-trixie -t hurricane:py3.12 .
#
# PYTHON_IMAGE is any Debian-based image with python3 (and its venv module): the
# official python images, or Debian's own python3 (the tests build on one).
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# -- builder: Hurricane and its locked dependencies, installed into a venv ------------
FROM ${PYTHON_IMAGE} AS builder
# For a build behind a TLS-intercepting proxy: --build-arg PIP_CERT=/path/to/ca-bundle
# (with the bundle mounted into the build). Declared in this stage only, so that it
# stays out of the image.
ARG PIP_CERT
ENV VIRTUAL_ENV=/opt/hurricane
# /opt/build holds the build backend for Hurricane's wheel; it stays in this stage.
RUN python3 -m venv "$VIRTUAL_ENV" && python3 -m venv /opt/build
WORKDIR /src
# Every dependency exactly as image/requirements.lock pins it, each file checked
# against the lock's hashes (a changed or unlisted file fails the build), and nothing
# that the lock does not name (--no-deps). image/lock-requirements.sh writes the locks.
# Before the sources, so that this layer stays cached while only Hurricane changes.
# The pip cache is a build cache mount: fast rebuilds, nothing of it in any layer.
COPY image/requirements.lock image/build-requirements.lock image/
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eux; \
    "$VIRTUAL_ENV/bin/pip" install --require-hashes --no-deps -r image/requirements.lock; \
    /opt/build/bin/pip install --require-hashes --no-deps -r image/build-requirements.lock
COPY pyproject.toml README.md ./
COPY hurricane/ hurricane/
# Hurricane's own wheel, built with the locked backend (no download: no isolation),
# then installed without dependencies; `pip check` fails the build if the lock misses
# one of them for this Python. The wheel and the sources stay in this stage.
RUN set -eux; \
    /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .; \
    "$VIRTUAL_ENV/bin/pip" install --no-index --no-deps /wheels/django_hurricane-*.whl; \
    "$VIRTUAL_ENV/bin/pip" check

# -- the image ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV VIRTUAL_ENV=/opt/hurricane \
    PATH=/opt/hurricane/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini from the distribution (the official python images lack it; Debian's python3
# may have it already). The user's home is /tmp: the only place written at run time.
# /app belongs to the user, so that a derived image's `RUN python manage.py
# collectstatic` works without switching to root.
RUN set -eux; \
    if ! command -v tini >/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends tini; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 hurricane; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin hurricane; \
    install -d -o 10001 -g 10001 /app

# The same python at the same path in both stages, so the venv works as copied. It
# belongs to the user, so that a derived image's `RUN pip install -r requirements.txt`
# works without USER root; at run time nothing needs to be writable (--read-only).
COPY --from=builder --chown=10001:10001 /opt/hurricane /opt/hurricane

COPY entrypoint/hurricane-entrypoint /usr/local/bin/hurricane-entrypoint

WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001
ENTRYPOINT ["tini", "--", "hurricane-entrypoint"]
CMD ["serve"]

# Last, so that a new revision or build time reuses every layer above.
ARG HURRICANE_VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/django-hurricane/django-hurricane
LABEL org.opencontainers.image.title="Hurricane" \
      org.opencontainers.image.description="Django on Kubernetes: app server and AMQP consumer with probes, metrics and graceful shutdown" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${HURRICANE_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT"

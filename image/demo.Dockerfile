# The demo project on Hurricane's image: what a user's Dockerfile looks like.
#   docker buildx bake demo
#   docker run --rm --read-only --tmpfs /tmp -p 8000:8000 -p 8001:8001 blueshoe/hurricane-demo
ARG BASE_IMAGE=blueshoe/hurricane:py3.11
FROM ${BASE_IMAGE}

# The base's working directory already; said again so that the COPY reads plainly.
WORKDIR /app
# The demo's own requirement: PostgreSQL, which the Kubernetes manifests give it.
# (debugpy, for their development overlay's HURRICANE_DEBUGGER=true, is in the base.)
RUN pip install --no-cache-dir "psycopg[binary]==3.3.*"
COPY examples/demo/ .
RUN python manage.py collectstatic --noinput

# The SQLite database lives in /tmp (the only writable place under --read-only) and is
# created at start; the collected static files are served by Hurricane.
ENV DEMO_DATABASE=/tmp/demo.sqlite3 \
    HURRICANE_COMMANDS=migrate \
    HURRICANE_STATIC=true

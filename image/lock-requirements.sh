#!/usr/bin/env bash
# Write the hash locks the Dockerfile installs from, with uv's resolver (installed on
# first use into .cache/, git-ignored):
#
#   image/requirements.lock        Hurricane's runtime dependencies (pyproject.toml's
#                                  [project] dependencies) and its "debug" extra
#                                  (debugpy: HURRICANE_DEBUGGER=true works on the base
#                                  image), every one pinned with the hashes of all
#                                  its files
#   image/build-requirements.lock  the build backend (pyproject.toml's [build-system])
#
#   image/lock-requirements.sh                 after a change to pyproject.toml: keeps
#                                              every pin it can, adds what is new
#   image/lock-requirements.sh --upgrade       every dependency to its newest release
#   image/lock-requirements.sh --upgrade-package tornado
#
# One lock serves every image docker-bake.hcl builds: the resolution is universal (it
# holds for every Python from PYTHON_FLOOR on, amd64 and arm64 alike), the fewest
# versions of each package are chosen (one Django for every image), and each pin
# carries the hashes of all its wheels and its sdist, so pip finds a file whose hash
# is listed on any of them. tests/test_image.py checks the locks against pyproject.toml,
# the Dockerfile and docker-bake.hcl.
set -euo pipefail

# The oldest Python docker-bake.hcl builds an image for.
PYTHON_FLOOR=3.11
UV_VERSION=0.13.9

cd "$(dirname "$0")/.."
uv=.cache/uv-$UV_VERSION/bin/uv
if [[ ! -x $uv ]]; then
    python3 -m venv ".cache/uv-$UV_VERSION"
    ".cache/uv-$UV_VERSION/bin/pip" install --quiet "uv==$UV_VERSION"
fi

compile() {
    "$uv" pip compile --quiet --universal --python-version "$PYTHON_FLOOR" \
        --fork-strategy fewest --generate-hashes --no-python-downloads \
        --custom-compile-command "image/lock-requirements.sh" "$@"
}

compile "$@" --extra debug --output-file image/requirements.lock pyproject.toml

# The [build-system] requirements, the only input here.
build_requires=$(python3 - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as file:
    print("\n".join(tomllib.load(file)["build-system"]["requires"]))
PY
)
compile "$@" --output-file image/build-requirements.lock - <<<"$build_requires"

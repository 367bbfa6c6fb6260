# Hurricane's images for every supported Python, on amd64 and arm64.
#
#   docker buildx bake                     the base images (group "default")
#   docker buildx bake demo                the demo project on the py3.11 base
#   docker buildx bake --print             what would be built
#   VERSION=2.0.0 REVISION=$(git rev-parse HEAD) CREATED=$(date -u +%FT%TZ) \
#     docker buildx bake --push            a release
#
# Every variable can be set from the environment of the same name.

variable "IMAGE" {
  # registry/namespace/name; prefix a registry host to push elsewhere than Docker Hub
  default = "blueshoe/hurricane"
}

variable "DEMO_IMAGE" {
  default = "${IMAGE}-demo"
}

variable "VERSION" {
  # Hurricane's version, as in pyproject.toml
  default = "2.0.0.dev0"
}

variable "PLATFORMS" {
  # comma-separated
  default = "linux/amd64,linux/arm64"
}

variable "REVISION" {
  # the git commit, for the org.opencontainers.image.revision label
  default = "unknown"
}

variable "CREATED" {
  # RFC 3339 build time, for the org.opencontainers.image.created label
  default = "unknown"
}

variable "SOURCE" {
  default = "https://github.com/django-hurricane/django-hurricane"
}

group "default" {
  targets = ["hurricane"]
}

# What a release pushes: every base image and the demo (.github/workflows/image.yml).
group "release" {
  targets = ["hurricane", "demo"]
}

# Every image carries an SBOM (what is inside, package by package) and a provenance
# attestation (how and from what it was built, with every build step: mode=max);
# buildx attaches both to the image index it pushes.
target "_attested" {
  attest = ["type=sbom", "type=provenance,mode=max"]
}

target "_common" {
  inherits  = ["_attested"]
  context   = "."
  platforms = split(",", PLATFORMS)
  args = {
    HURRICANE_VERSION = VERSION
    REVISION          = REVISION
    CREATED           = CREATED
    SOURCE            = SOURCE
  }
}

# hurricane-py3-11 ... hurricane-py3-14: blueshoe/hurricane:py3.11, :py3.11-2.0.0, ...
target "hurricane" {
  name       = "hurricane-py${replace(py, ".", "-")}"
  inherits   = ["_common"]
  matrix     = { py = ["3.11", "3.12", "3.13", "3.14"] }
  dockerfile = "Dockerfile"
  args = {
    PYTHON_IMAGE = "python:${py}-slim-trixie"
  }
  tags = ["${IMAGE}:py${py}", "${IMAGE}:py${py}-${VERSION}"]
}

# The demo project (examples/demo) on the py3.11 image built above, not a pulled one.
target "demo" {
  inherits   = ["_attested"]
  context    = "."
  platforms  = split(",", PLATFORMS)
  dockerfile = "image/demo.Dockerfile"
  contexts = {
    hurricane-base = "target:hurricane-py3-11"
  }
  args = {
    BASE_IMAGE = "hurricane-base"
  }
  tags = ["${DEMO_IMAGE}:latest", "${DEMO_IMAGE}:${VERSION}"]
}

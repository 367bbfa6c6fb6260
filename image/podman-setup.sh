#!/usr/bin/env bash
# Make this machine able to build and run Hurricane's image without a Docker engine
# and without a reachable container registry: rootful podman from Debian's packages,
# configured for this sandbox, and a local stand-in for the python base image.
#
# Idempotent. The first run installs packages and builds the stand-in (a few minutes);
# later runs find everything in the cache folder and take seconds.
#
#   image/podman-setup.sh            prepare; prints the stand-in's name on stdout
#   image/podman build ...           then use podman through the wrapper beside this file
#
# HURRICANE_IMAGE_CACHE moves the cache folder (default: image/.cache, git-ignored).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${HURRICANE_IMAGE_CACHE:-$here/.cache}
# The Debian release of the official python images the Dockerfile defaults to
# (python:3.X-slim-trixie), so that the tests run on what users get.
suite=trixie
# Bump the tag when the stand-in's recipe changes, so cached archives are rebuilt.
stand_in=localhost/hurricane-stand-in:$suite-v1
stand_in_packages="python3 python3-venv python3-pip tini ca-certificates"
archive=$cache/stand-in-$suite-v1.oci.tar

log() { echo "podman-setup: $*" >&2; }

# 1. Packages. podman recommends buildah, netavark and aardvark-dns (build, networks);
#    runc because crun fails on this sandbox's hybrid cgroup v1/v2 mounts.
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian's packages"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap >&2
fi

# 2. Configuration, written where the wrapper points podman (CONTAINERS_CONF,
#    CONTAINERS_STORAGE_CONF). Paths are absolute, so they are written at run time.
mkdir -p "$cache"
run_dir=/run/hurricane-podman-$(printf '%s' "$cache" | sha256sum | cut -c1-12)
cat >"$cache/containers.conf" <<CONF
# Written by image/podman-setup.sh.
[containers]
# The sandbox lacks CAP_SYS_RESOURCE: podman may not raise limits above the host's.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun fails on the hybrid cgroup setup; runc with cgroupfs works.
runtime = "runc"
cgroup_manager = "cgroupfs"
# No systemd journal here.
events_logger = "file"
tmp_dir = "$run_dir/libpod"
CONF
cat >"$cache/storage.conf" <<CONF
# Written by image/podman-setup.sh.
[storage]
driver = "overlay"
graphroot = "$cache/storage"
runroot = "$run_dir/storage"
CONF

export CONTAINERS_CONF=$cache/containers.conf
export CONTAINERS_STORAGE_CONF=$cache/storage.conf

# 3. The stand-in base image: no registry can be pulled from, so build one with
#    debootstrap from the Debian mirror this machine's apt sources name.
if podman image exists "$stand_in"; then
    echo "$stand_in"
    exit 0
fi
if [[ -f $archive ]]; then
    log "loading $stand_in from $archive"
    podman load --quiet --input "$archive" >&2
    podman image exists "$stand_in" || { log "$archive did not hold $stand_in; delete it"; exit 1; }
    echo "$stand_in"
    exit 0
fi

# The Debian mirror of this machine's apt sources (the first "deb" source of Debian's
# main suite, deb822 .sources files or one-line sources.list), never written down
# here; it serves every release, $suite included.
mirror=$(
    python3 - <<'PARSE'
import glob, re

SUITES = {"bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable"}


def first_mirror():
    # deb822 .sources files: records separated by blank lines
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for record in re.split(r"\n\s*\n", open(path).read()):
            fields = dict(
                line.split(":", 1) for line in record.splitlines()
                if ":" in line and not line.startswith(("#", " "))
            )
            if (
                "deb" in fields.get("Types", "").split()
                and set(fields.get("Suites", "").split()) & SUITES
                and fields.get("Enabled", "yes").strip() != "no"
            ):
                return fields["URIs"].split()[0]
    # one-line format: deb [options] URI SUITE COMPONENTS...
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] in SUITES:
                return words[1]
    return ""

print(first_mirror())
PARSE
)
[[ -n $mirror ]] || { log "no Debian source in /etc/apt/sources*"; exit 1; }

rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
chmod 755 "$rootfs" # mktemp makes it 0700: it becomes the image's /
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite (minbase) into $rootfs"
# env -i: keep this machine's TMPDIR and friends out of the chroot.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >&2
log "installing $stand_in_packages in the chroot"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    chroot "$rootfs" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $stand_in_packages && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin" >&2
log "importing it as $stand_in"
tar -C "$rootfs" --numeric-owner -c . |
    podman import --change 'CMD ["python3"]' - "$stand_in" >&2
podman save --quiet --format oci-archive --output "$archive.part" "$stand_in" >&2
mv "$archive.part" "$archive"
echo "$stand_in"

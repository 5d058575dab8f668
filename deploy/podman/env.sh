# shellcheck shell=bash
# Podman on machines like the build machines (Debian 12, root, no systemd,
# a hybrid cgroup v1 layout, a sandbox that forbids raising rlimits).
# Source this file, then call podman_env: it installs podman and runc when
# missing (apt-get, as root) and exports CONTAINERS_CONF pointing at a
# configuration written under DIR (nothing in /etc is touched):
#
#   podman_env DIR
#
# Why each setting (measured with podman 4.3.1):
# - runtime runc: crun, podman's default, refuses the hybrid cgroup layout
#   ("cgroups in hybrid mode not supported");
# - default_ulimits = []: podman raises RLIMIT_NPROC/NOFILE by default and
#   the sandbox refuses that ("setrlimit ... Operation not permitted");
# - cgroup_manager cgroupfs: there is no systemd to ask for cgroups.

podman_log() { printf '[podman] %s\n' "$*" >&2; }

podman_env() {
  local dir=$1
  if ! command -v podman >/dev/null || [ ! -x /usr/sbin/runc ]; then
    if [ "$(id -u)" != 0 ]; then
      podman_log "podman or runc missing: apt-get install podman runc (as root)"
      return 1
    fi
    podman_log "installing podman and runc with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq podman runc >/dev/null
  fi
  mkdir -p "$dir"
  cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"

[engine.runtimes]
runc = ["/usr/sbin/runc"]
CONF
  export CONTAINERS_CONF="$dir/containers.conf"
}

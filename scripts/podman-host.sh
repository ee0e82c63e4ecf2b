# Shared by test-env.sh and demo.sh (source it): installing Debian packages
# that are missing, and the containers.conf podman needs on these hosts.

# install_packages PKG...: apt-get installs the given packages (as root, or
# through sudo).
install_packages() {
    [ $# -gt 0 ] || return 0
    echo "installing $*"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# write_containers_conf PATH: crun fails on hybrid cgroups here, the default
# ulimits cannot be raised, and there is no systemd or journald (podman's
# events go to a file, which its event stream reads).
write_containers_conf() {
    cat >"$1" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
}

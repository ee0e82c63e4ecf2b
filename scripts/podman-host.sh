# Shared by test-env.sh, demo.sh and demo-fleet.sh (source it): installing
# Debian packages that are missing, the containers.conf podman needs on
# these hosts, and the demos' busybox image.

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

# import_demo_image IMAGE GREETING [PODMAN_ARGS...]: imports a busybox image
# whose /www/index.html says GREETING (podman run with PODMAN_ARGS first,
# such as a node's own --root/--runroot/--tmpdir).
import_demo_image() {
    local image=$1 greeting=$2
    shift 2
    local rootfs
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for app in $(/bin/busybox --list); do
        [ "$app" = busybox ] || ln -s busybox "$rootfs/bin/$app"
    done
    echo "<h1>$greeting</h1>" >"$rootfs/www/index.html"
    tar -C "$rootfs" -cf "$rootfs.tar" .
    podman "$@" import -q --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' "$rootfs.tar" "$image" >/dev/null
    rm -rf "$rootfs" "$rootfs.tar"
}

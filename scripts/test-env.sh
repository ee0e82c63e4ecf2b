#!/usr/bin/env bash
# Installs and configures what MCP's tests, demo and benchmarks need on a
# Debian host: podman with runc, a local image registry, busybox test images
# pushed to it, QEMU with a test guest (a Debian cloud kernel, a busybox
# initramfs, and a one-sector raw disk), and a Python virtual environment
# with maturin, pytest and mypy. Idempotent: run it as often as you like.
#
# Writes $MCP_ENV_DIR/env (default .test-env/env) with the variables the tests
# read; source it or let the Makefile do so.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/podman-host.sh"
env_dir=${MCP_ENV_DIR:-$root/.test-env}
registry_addr=${MCP_TEST_REGISTRY:-127.0.0.1:5000}
mkdir -p "$env_dir"

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v buildah >/dev/null || need+=(buildah)
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v catatonit >/dev/null || need+=(catatonit)
command -v curl >/dev/null || need+=(curl)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
install_packages ${need[@]+"${need[@]}"}

conf=$env_dir/containers.conf
write_containers_conf "$conf"
export CONTAINERS_CONF=$conf

# The image registry.
reg_dir=$env_dir/registry
mkdir -p "$reg_dir/data"
if ! curl -fsS "http://$registry_addr/v2/" >/dev/null 2>&1; then
    cat >"$reg_dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $reg_dir/data
  delete:
    enabled: true
http:
  addr: $registry_addr
YML
    setsid nohup docker-registry serve "$reg_dir/config.yml" >"$reg_dir/log" 2>&1 < /dev/null &
    echo $! >"$reg_dir/pid"
    for _ in $(seq 1 50); do
        curl -fsS "http://$registry_addr/v2/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://$registry_addr/v2/" >/dev/null || { echo "test-env: registry did not start; see $reg_dir/log" >&2; exit 1; }
fi

# Busybox images: two versions of a tiny web service (they differ in the page
# they serve, so their ids differ).
make_image() {
    local tag=$1 page=$2
    local ref=$registry_addr/mcp-test/busybox:$tag
    if curl -fsS "http://$registry_addr/v2/mcp-test/busybox/manifests/$tag" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
        return
    fi
    local rootfs
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp" "$rootfs/srv"
    cp /bin/busybox "$rootfs/bin/busybox"
    for app in $(/bin/busybox --list); do
        [ "$app" = busybox ] || ln -s busybox "$rootfs/bin/$app"
    done
    echo "$page" >"$rootfs/www/index.html"
    tar -C "$rootfs" -cf "$rootfs.tar" .
    podman import -q \
        --change 'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]' \
        --change 'ENV PATH=/bin' \
        "$rootfs.tar" "localhost/mcp-test/busybox:$tag" >/dev/null
    podman push -q --tls-verify=false "localhost/mcp-test/busybox:$tag" "docker://$ref"
    rm -rf "$rootfs" "$rootfs.tar"
    echo "test-env: pushed $ref"
}
make_image 1 "hello from v1"
make_image 2 "hello from v2"

. "$root/scripts/qemu-guest.sh"
build_qemu_guest "$env_dir/qemu"

# A Python environment for the bindings: maturin builds them, pytest and
# mypy test them.
venv=$env_dir/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import maturin, pytest, mypy' 2>/dev/null ||
    "$venv/bin/pip" install -q 'maturin>=1.9.4,<2' 'pytest>=8' 'mypy>=1.10'

cat >"$env_dir/env" <<ENV
export CONTAINERS_CONF=$conf
export MCP_TEST_REGISTRY=$registry_addr
export MCP_TEST_IMAGE=$registry_addr/mcp-test/busybox:1
export MCP_TEST_IMAGE_V2=$registry_addr/mcp-test/busybox:2
export MCP_TEST_QEMU=$(command -v qemu-system-x86_64)
export MCP_TEST_KERNEL=$env_dir/qemu/vmlinuz
export MCP_TEST_INITRD=$env_dir/qemu/initrd.gz
export MCP_TEST_DISK=$env_dir/qemu/disk.raw
export MCP_PYTHON=$venv/bin/python
ENV
echo "test-env: ready ($env_dir/env)"

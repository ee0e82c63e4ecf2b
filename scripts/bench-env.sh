#!/usr/bin/env bash
# What `make bench` needs beyond the test environment: OpenSSH's server, for
# the scp comparison of file transfers (the benchmark runs its own sshd on
# 127.0.0.1 with throwaway keys and does not use the system's).
# Idempotent.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/podman-host.sh"

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v scp >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
install_packages ${need[@]+"${need[@]}"}

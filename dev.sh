#!/usr/bin/env bash
# Set up Stellwerk on Debian 12 (as root) and run it.
#   ./dev.sh demo   render the bundled example cluster into ./assets/
#   ./dev.sh test   run the whole test suite against the real engines
set -euo pipefail
cd "$(dirname "$0")"

# What the main job needs, and what the tests run for real.
# The venv holds the test extras too, and libvirt-python among them builds against libvirt's headers. The lab
# example's controllers get the host's etcd as a sysext image, which render squashes with mksquashfs.
DEMO_PACKAGES=(python3 python3-venv python3-pip libvirt-dev pkg-config gcc python3-dev squashfs-tools etcd-server
               etcd-client)
TEST_PACKAGES=(ignition policycoreutils openssl wireguard-tools etcd-server etcd-client cloud-init nftables
               systemd udev util-linux iproute2 curl ipxe tftp-hpa
               qemu-system-x86 ipxe-qemu ovmf libvirt-daemon-system libvirt-dev pkg-config gcc python3-dev
               busybox-static cpio dnsmasq-base mmdebstrap squashfs-tools zstd jq kmod shellcheck e2fsprogs)

install_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts etcd on install where systemd runs; tests start their own members.
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
}

ensure_venv() {
  if [ -x .venv/bin/stellwerk ] && .venv/bin/python -c 'import stellwerk.cli, pytest, hypothesis' 2>/dev/null \
     && [ .venv/.installed -nt pyproject.toml ]; then
    return 0
  fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "Stellwerk needs Python 3.11 or newer (Debian 12 has it)" >&2; exit 1; }
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
}

case "${1:-}" in
  demo)
    install_packages "${DEMO_PACKAGES[@]}"
    ensure_venv
    .venv/bin/stellwerk render examples/lab-cluster.yaml
    .venv/bin/stellwerk pki check assets/lab
    ;;
  test)
    install_packages "${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    ensure_venv
    shift
    exec .venv/bin/pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest arguments]" >&2
    exit 2
    ;;
esac

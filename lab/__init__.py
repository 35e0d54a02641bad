"""The libvirt lab: virtual machines that netboot the rendered cluster, get checked and get faults injected.

Building blocks, one concern each: `daemons` (libvirtd and virtlogd running, a connection), `accel` (KVM where it
truly works, else TCG), `network` (an isolated network without libvirt's DHCP), `routeradv` (router advertisements
that end iPXE's wait for IPv6), `domain` (network-booting VMs with BIOS or UEFI and a logged serial console).
"""

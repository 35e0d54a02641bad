"""The libvirt lab: virtual machines that netboot the rendered cluster, get checked and get faults injected."""

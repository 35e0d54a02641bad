"""Network boot: the machine store, and the DHCP, TFTP and HTTP services that take a machine from
firmware PXE to its own rendered config."""

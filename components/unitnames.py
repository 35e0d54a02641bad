"""systemd unit names derived from paths, escaped the way `systemd-escape --path` does it.

A mount unit only works when its name matches its Where= path, so the
components that mount disks take their names from here.
"""

from __future__ import annotations


def escape_path(path: str) -> str:
    parts = [part for part in path.split("/") if part and part != "."]
    if not parts:
        return "-"
    out = []
    for index, char in enumerate("/".join(parts)):
        if char == "/":
            out.append("-")
        elif (char.isascii() and char.isalnum()) or char in ":_" or (char == "." and index > 0):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def mount_unit_name(path: str) -> str:
    return escape_path(path) + ".mount"


def device_unit_name(device: str) -> str:
    return escape_path(device) + ".device"

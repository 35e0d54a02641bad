"""The error the lab raises when the host cannot do what was asked, with what to do about it."""

from __future__ import annotations

from stellwerk.base.errors import Problem, RunFailed, UserError


class LabError(UserError):
    """The host, libvirt or QEMU cannot do something the lab needs.

    A UserError, so the CLI prints it as one line and exits 2: each of these is fixed on the host (a package, a
    daemon, a name already in use), never in Stellwerk's code. `subject` names the thing that is wrong.
    """

    def __init__(self, subject: str, message: str):
        super().__init__(Problem(file=subject, line=None, path="", message=message))
        self.subject = subject
        self.message = message


class NodeFailed(RunFailed):
    """A lab machine reported that its provisioning failed: the stage, the reason and its last log lines."""

    def __init__(self, node: str, failure: dict):
        self.node, self.failure = node, failure
        log = "\n".join(f"  {line}" for line in (failure.get("log") or "").splitlines())
        super().__init__(f"{node}: provisioning failed in stage {failure.get('stage')}: {failure.get('reason')}"
                         + (f"\n{node}: its last log lines:\n{log}" if log else ""))

"""netboot's HTTP endpoints: a route table, and a handler per endpoint that takes a Request and returns a Response.

Handlers never see a socket: the transport (http.py) tells them, in the request, where it came from (`peer`,
`client`), which address it reached (`local_host`) and whether over HTTPS (`secure`). What they refuse they raise
as an HttpError, with a status and a message that names what was wrong.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from . import ipxe
from .files import check_contained, file_response, open_beneath
from .installer import REPORT_EVENTS, installer_config
from .machines import PROVISION_FAILED, MachineRegistry, SecretsSpent, TokenRefused, failure_from
from .messages import HttpError, Request, Response, truncate
from .provisioning import PartsCache, secrets_url
from .store import LabelError, Selection, Store, normalize_labels
from .tls import ServerIdentity

log = logging.getLogger("stellwerk.netboot.http")
# What machines report of themselves (a failed provisioning), for the operator watching `netboot serve`.
machines_log = logging.getLogger("stellwerk.netboot.machines")

MAX_QUERY_FIELDS = 32
IGNITION_TYPE = "application/vnd.coreos.ignition+json"  # IANA-registered media type of Ignition configs
CLOUD_CONFIG_TYPE = "text/cloud-config; charset=utf-8"
NOCLOUD_FILES = ("meta-data", "user-data", "vendor-data", "network-config")
_SECRETS_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_STAGE = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Route:
    """An endpoint: its path (or a prefix, ending in '/'), the BootService method that answers it, the methods it
    takes, and the listener it is on (HTTPS for the secrets, HTTP for the rest)."""

    path: str
    handler: str
    methods: tuple[str, ...] = ("GET", "HEAD")
    secure: bool = False
    wrong_method: str | None = None  # what a request with another method is told

    def matches(self, request: Request) -> bool:
        hit = request.path.startswith(self.path) if self.path.endswith("/") else request.path == self.path
        return hit and self.secure == request.secure


ROUTES: tuple[Route, ...] = (
    Route("/report", "report", methods=("POST",), wrong_method="an installer reports with POST"),
    Route("/healthz", "healthz"),
    Route("/healthz", "healthz", secure=True),
    Route("/secrets", "secrets", secure=True),
    Route("/boot.ipxe", "boot_script"),
    Route("/ipxe", "ipxe_script"),
    Route("/ignition", "config"),
    Route("/cloud-config", "config"),
    Route("/metadata", "config"),
    Route("/nocloud/", "nocloud"),
    Route("/assets/", "asset"),
)


class BootService:
    """What netboot answers, for one assets directory: the store selects a machine's group and profile, the
    machine registry keeps its state and one-time tokens, and the parts cache splits configs into public and
    secret parts."""

    def __init__(self, store: Store, assets_dir: Path, *, public_url: str | None, http_port: int,
                 tls: ServerIdentity | None, tls_port: int | None, machines: MachineRegistry | None,
                 serve_controller_secrets: bool, extra_merges: tuple[str, ...],
                 count: Callable[[str], None], security: Callable[[str, Request, str, str | None], None]):
        self.store = store
        self.boot_dir = assets_dir / "boot"
        self.public_url = public_url
        self.http_port, self.tls, self.tls_port = http_port, tls, tls_port
        self.machines = machines
        # Cloud-init has no way to fetch part of its config over pinned TLS, so a cloud-config with CA keys
        # (a controller's) is served in the clear only when the operator opts in for an isolated network.
        self.serve_controller_secrets = serve_controller_secrets
        self.extra_merges = extra_merges
        self.count, self.security = count, security
        self._parts = PartsCache()

    def handle(self, request: Request) -> Response:
        """The response to a parsed request, or an HttpError; any other exception is a 500 with its reason."""
        try:
            route = next((route for route in ROUTES if route.matches(request)), None)
            if route is None:
                raise _no_route(request)
            if request.method not in route.methods:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, route.wrong_method or f"method {request.method} is not "
                                "served; use GET or HEAD", headers=(("Allow", ", ".join(route.methods)),))
            return getattr(self, route.handler)(request)
        except HttpError:
            raise
        except Exception as exc:  # a bug, or the assets changed under us: 500, never a dead connection thread
            log.debug("internal error serving %r", request.line, exc_info=True)
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                            close=True, counter="server_errors") from None

    def healthz(self, request: Request) -> Response:
        return Response(200, b"ok")

    def boot_script(self, request: Request) -> Response:
        return Response(200, ipxe.boot_script(self._base_url(request)).encode())

    def _machine(self, query: str) -> tuple[dict[str, str], Selection]:
        labels = _labels(query)
        store = self.store
        selection = store.select(labels)
        if selection is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no group matches mac {labels['mac']} and there is no default "
                            "group", counter="unknown_machines", mac=labels["mac"])
        return labels, selection

    def ipxe_script(self, request: Request) -> Response:
        labels, selection = self._machine(request.query)
        group, node = selection.group, selection.group.node
        if self.machines is not None and node is not None:
            self.machines.record(node, labels["mac"], "discovered", request.peer)
        if selection.profile.kernel is None:
            script = ipxe.local_boot_script(group.name, f"profile {selection.profile.id} boots the local disk")
            return Response(200, script.encode(), mac=labels["mac"], group=group.name)
        if selection.profile.config == "installer" and self.machines is not None and node is not None:
            status = self.machines.statuses([node])[0]
            if status.installed:
                # Installed already: boot the disk. `stellwerk netboot reprovision` sends it to the installer again.
                script = ipxe.local_boot_script(group.name, f"node {node} is {status.state}; booting its disk")
                return Response(200, script.encode(), mac=labels["mac"], group=group.name)
        config_labels = self.store.config_labels(selection, labels)
        script = ipxe.machine_script(selection, self._base_url(request), config_labels)
        return Response(200, script.encode(), mac=labels["mac"], group=selection.group.name)

    def config(self, request: Request) -> Response:
        path = request.path
        labels, selection = self._machine(request.query)
        group = selection.group
        if path == "/metadata":
            return Response(200, group.metadata_json, "application/json", mac=labels["mac"], group=group.name)
        if path == "/ignition":
            if selection.profile.config == "installer":
                return self._installer(request, selection, labels["mac"])
            return self._ignition(request, selection, labels["mac"])
        return self._node_config(selection, "cloud-config", labels["mac"])

    def _installer(self, request: Request, selection: Selection, mac: str) -> Response:
        """The live installer's config (stage one of a two-stage install); it holds no secret."""
        group = selection.group
        path = self._config_path(selection, mac)
        try:
            body = installer_config(group, self._parts.get(path).public, self._base_url(request), mac)
        except (OSError, ValueError) as exc:
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"mac {mac}: cannot make the installer config of "
                            f"group {group.name!r}: {getattr(exc, 'strerror', None) or exc}",
                            counter="server_errors", mac=mac, group=group.name) from None
        if self.machines is not None:
            self.machines.record(group.node, mac, "installing", request.peer)
        return Response(200, body, IGNITION_TYPE, mac=mac, group=group.name)

    def report(self, request: Request) -> Response:
        """A machine's report: POST /report?mac=…&event=installed|install-failed, or event=provision-failed&stage=…
        with the machine's last log lines as a text body."""
        try:
            pairs = dict(parse_qsl(request.query, keep_blank_values=True, strict_parsing=True, max_num_fields=3))
        except ValueError:
            pairs = {}
        event = pairs.pop("event", None)
        stage = pairs.pop("stage", None) if event == PROVISION_FAILED else None
        if event not in (*REPORT_EVENTS, PROVISION_FAILED) or (event == PROVISION_FAILED and not (
                stage and _STAGE.fullmatch(stage))):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"query must be mac=<MAC>&event=<{'|'.join(REPORT_EVENTS)}>, or "
                            f"mac=<MAC>&event={PROVISION_FAILED}&stage=<stage: a-z, 0-9, '-'>")
        if request.body and event != PROVISION_FAILED:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"only a {PROVISION_FAILED} report carries a body")
        if set(pairs) != {"mac"}:  # a report names its machine by MAC alone: no labels to steer the selection
            raise HttpError(HTTPStatus.BAD_REQUEST, "a report's query is mac=<MAC>&event=<event>[&stage=<stage>], "
                            f"nothing more (got {', '.join(sorted(pairs)) or 'no mac'})")
        labels, selection = self._machine(urlencode(pairs))
        node = selection.group.node
        if node is None or self.machines is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"mac {labels['mac']}: no node to record a report for",
                            counter="not_found", mac=labels["mac"], group=selection.group.name)
        if event == "installed":
            self.machines.record(node, labels["mac"], "installed", request.peer)
        elif event == PROVISION_FAILED:
            failure = failure_from(stage, request.body)
            self.machines.fail(node, labels["mac"], failure, request.peer)
            machines_log.warning("node %s reports that its provisioning failed in stage %s: %s", node, stage,
                                 failure.reason)
        else:
            self.machines.note(node, labels["mac"], event, request.peer)
        return Response(200, f"recorded {event}\n".encode(), mac=labels["mac"], group=selection.group.name)

    def _ignition(self, request: Request, selection: Selection, mac: str) -> Response:
        """The public part of the node's config; when it has a secret part, with a one-time pointer to it."""
        group = selection.group
        self._check_kind(selection, "ignition", mac)
        path = self._config_path(selection, mac)
        try:
            entry = self._parts.entry(path)
        except (OSError, ValueError) as exc:
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the config of node {group.node!r}: "
                            f"{getattr(exc, 'strerror', None) or exc}; run `stellwerk render` again",
                            counter="server_errors", mac=mac, group=group.name) from None
        parts = entry[1]
        client = request.peer
        if parts.secret_bytes is None:
            if self.machines is not None:
                self.machines.record(group.node, mac, "booted", client)
            body = (self._parts.served_from(path, entry, None, None, self.extra_merges) if self.extra_merges
                    else parts.public_bytes)
            return Response(200, body, IGNITION_TYPE, mac=mac, group=group.name)
        if self.tls is None or self.machines is None or self.tls_port is None:
            raise HttpError(HTTPStatus.FORBIDDEN, f"mac {mac}: the config of node {group.node!r} holds private "
                            "keys, which are served only over HTTPS with a one-time token; this server has no "
                            "HTTPS listener", counter="forbidden", mac=mac, group=group.name)
        try:
            token = self.machines.token_for(group.node, mac, client)
        except SecretsSpent as exc:
            self.security(request.client, request, f"config of node {exc.node} asked for again "
                           f"after its secrets were delivered ({exc.used} to {exc.used_by})", exc.node)
            raise HttpError(HTTPStatus.FORBIDDEN, f"mac {mac}: the secrets of node {group.node!r} were already "
                            f"delivered in this provisioning ({exc.used}, to {exc.used_by}); if the machine is "
                            f"being installed again, run `stellwerk netboot reprovision ASSETS_DIR {group.node}`",
                            counter="forbidden", mac=mac, group=group.name) from None
        self.machines.record(group.node, mac, "booted", client)
        body = self._parts.served_from(path, entry, secrets_url(request.local_host, self.tls_port, token), self.tls.ca_pem,
                                       self.extra_merges)
        return Response(200, body, IGNITION_TYPE, mac=mac, group=group.name)

    def secrets(self, request: Request) -> Response:
        """The secret part of a node's config, once, for the token its public part carried."""
        try:
            pairs = parse_qsl(request.query, keep_blank_values=True, strict_parsing=True, max_num_fields=2)
        except ValueError:
            pairs = []
        token = pairs[0][1] if len(pairs) == 1 and pairs[0][0] == "token" else ""
        if not _SECRETS_TOKEN.fullmatch(token):
            raise HttpError(HTTPStatus.BAD_REQUEST, "query must be exactly token=<the one-time token>")
        client = request.client
        assert self.machines is not None
        try:
            node = self.machines.redeem(token, request.peer)
        except TokenRefused as exc:
            self.security(client, request, f"secrets token refused: {exc.reason}", exc.node)
            raise HttpError(HTTPStatus.FORBIDDEN, f"token refused: {exc.reason}", counter="forbidden") from None
        selection = self.store.node_selection(node)
        if selection is None or selection.config_path is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"node {node!r} is no longer in the machine store",
                            counter="not_found")
        try:
            parts = self._parts.get(selection.config_path)
        except (OSError, ValueError) as exc:
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the config of node {node!r}: "
                            f"{getattr(exc, 'strerror', None) or exc}", counter="server_errors") from None
        if parts.secret_bytes is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"node {node!r} has no secret part any more (re-rendered?)",
                            counter="not_found")
        return Response(200, parts.secret_bytes, IGNITION_TYPE, group=selection.group.name)

    def _check_kind(self, selection: Selection, kind: str, mac: str) -> None:
        group, profile = selection.group, selection.profile
        if profile.config != kind:
            other = "/ignition" if profile.config == "ignition" else "/cloud-config"
            raise HttpError(HTTPStatus.NOT_FOUND, f"mac {mac}: group {group.name!r} boots profile {profile.id!r}, "
                            f"which reads {profile.config}, not {kind}; fetch {other}", counter="not_found",
                            mac=mac, group=group.name)

    def _config_path(self, selection: Selection, mac: str) -> Path:
        if selection.config_path is None:
            group = selection.group
            raise HttpError(HTTPStatus.NOT_FOUND, f"mac {mac}: group {group.name!r} names no node (metadata.node), "
                            "so there is no config to serve", counter="not_found", mac=mac, group=group.name)
        return selection.config_path

    def _node_config(self, selection: Selection, kind: str, mac: str) -> Response:
        """A cloud-config, whole: cloud-init cannot fetch a part of it over pinned TLS."""
        group = selection.group
        self._check_kind(selection, kind, mac)
        if group.metadata.get("role") == "controller" and not self.serve_controller_secrets:
            raise HttpError(HTTPStatus.FORBIDDEN, f"mac {mac}: node {group.node!r} is a controller, whose config holds "
                            "CA keys; they are not served over plain HTTP (start netboot with "
                            "--serve-controller-secrets only on an isolated provisioning network)",
                            counter="forbidden", mac=mac, group=group.name)
        path = self._config_path(selection, mac)
        try:
            # Sent with sendfile like boot files: a config carries the whole WireGuard mesh, so on a large
            # cluster it is hundreds of KiB that need not pass through Python.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the config of node {group.node!r}: "
                            f"{exc.strerror}; run `stellwerk render` again and restart netboot",
                            counter="server_errors", mac=mac, group=group.name) from None
        if self.machines is not None:
            self.machines.record(group.node, mac, "booted", None)
        return Response(200, b"", CLOUD_CONFIG_TYPE, headers=[("Cache-Control", "no-store")], file=(fd, 0, size),
                        length=size, mac=mac, group=group.name)

    def nocloud(self, request: Request) -> Response:
        # /nocloud/<labels as a query>/<file>: cloud-init appends the file name to the seed URL (ipxe.py).
        parts = request.raw_path.split("/")
        if len(parts) != 4 or parts[3] not in NOCLOUD_FILES:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such NoCloud file; the seed serves {', '.join(NOCLOUD_FILES)}",
                            counter="not_found")
        labels, selection = self._machine(parts[2])
        mac, group = labels["mac"], selection.group
        if parts[3] == "user-data":
            return self._node_config(selection, "cloud-config", mac)
        if selection.profile.config != "cloud-config" or selection.config_path is None:
            return self._node_config(selection, "cloud-config", mac)  # the same 404 as user-data
        if parts[3] == "meta-data":
            # JSON is YAML; instance-id stays the same across renders so that cloud-init does not treat a changed
            # config as a new instance (that would, for one, regenerate the ssh host keys).
            meta = {"instance-id": group.node, "local-hostname": group.node}
            return Response(200, json.dumps(meta, sort_keys=True).encode(), "application/json", mac=mac,
                            group=group.name)
        # Empty but present: cloud-init retries a missing vendor-data or network-config ten times before it goes on.
        return Response(200, b"", mac=mac, group=group.name)

    def asset(self, request: Request) -> Response:
        relative = request.path[len("/assets/"):]
        parts = relative.split("/")
        for part in parts:
            if not part or part.startswith(".") or "\\" in part or "%" in part:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"asset path {relative!r} has a refused segment {part!r} "
                                "(empty, '.', '..', hidden, '%' or '\\')", counter="refused_paths")
        fd = open_beneath(self.boot_dir, parts)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise HttpError(HTTPStatus.NOT_FOUND, f"asset {relative!r} is not a regular file", counter="not_found")
            check_contained(fd, self.boot_dir)
            response = file_response(request, fd, info)
        except BaseException:
            os.close(fd)
            raise
        return response

    def _base_url(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        host = f"[{request.local_host}]" if ":" in request.local_host else request.local_host
        return f"http://{host}" if self.http_port == 80 else f"http://{host}:{self.http_port}"


def _no_route(request: Request) -> HttpError:
    if request.method not in ("GET", "HEAD"):
        return HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method} is not served; use GET or HEAD",
                         headers=(("Allow", "GET, HEAD"),))
    if request.secure:
        return HttpError(HTTPStatus.NOT_FOUND, f"the HTTPS listener serves only /secrets, not {request.path!r}",
                         counter="not_found")
    if request.path == "/secrets":
        return HttpError(HTTPStatus.FORBIDDEN, "secrets are served only over HTTPS, on the port named in the "
                         "machine's config", counter="forbidden")
    return HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {request.path!r}", counter="not_found")


def _labels(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_QUERY_FIELDS)
    except ValueError as exc:  # too many fields, or not UTF-8
        raise HttpError(HTTPStatus.BAD_REQUEST, f"query: {exc}") from None
    labels: dict[str, str] = {}
    for key, value in pairs:
        if key in labels:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"query: label {truncate(key, 40)!r} given twice")
        labels[key] = value
    try:
        labels = normalize_labels(labels)
    except LabelError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"query: {exc}") from None
    if "mac" not in labels:
        raise HttpError(HTTPStatus.BAD_REQUEST, "query: mac is required (the MAC of the booting interface, "
                        "as in ?mac=52-54-00-00-00-11)")
    return labels

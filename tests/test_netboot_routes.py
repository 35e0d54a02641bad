"""netboot's handlers without a socket: a Request in, a Response (or an HttpError) out, as the transport calls them.

The HTTP tests (test_netboot_http.py and others) drive the same handlers through a real server on loopback."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from stellwerk.netboot.machines import MachineRegistry
from stellwerk.netboot.messages import HttpError, Request
from stellwerk.netboot.routes import ROUTES, BootService
from stellwerk.netboot.store import Store
from support.netboot_servers import private_copy, render
from support.paths import EXAMPLE


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(EXAMPLE, tmp_path_factory.mktemp("routes") / "lab")


@pytest.fixture
def service(rendered, tmp_path):
    assets = private_copy(rendered, tmp_path / "lab")
    events = []
    return BootService(Store.load(assets), assets, public_url=None, http_port=8080, tls=None, tls_port=None,
                       machines=MachineRegistry(assets), serve_controller_secrets=False, extra_merges=(),
                       count=events.append, security=lambda *event: events.append(event))


def request(method: str, path: str, query: str = "", *, secure: bool = False, body: bytes = b"") -> Request:
    target = f"{path}?{query}" if query else path
    return Request(method, target, "HTTP/1.1", {"host": "x"}, path, path, query, True, f"{method} {target} HTTP/1.1",
                   len(body), body, peer="10.213.0.11", client="10.213.0.11:40000", local_host="10.213.0.1",
                   secure=secure)


def refusal(service: BootService, req: Request) -> HttpError:
    with pytest.raises(HttpError) as raised:
        service.handle(req)
    return raised.value


def test_scripts_point_back_at_the_address_the_machine_reached(service):
    chain = service.handle(request("GET", "/boot.ipxe"))
    assert chain.status == 200 and b"http://10.213.0.1:8080/ipxe?" in chain.body
    script = service.handle(request("GET", "/ipxe", "mac=52-54-00-00-00-11"))
    assert script.status == 200 and script.group == "c1" and b"http://10.213.0.1:8080/" in script.body
    assert MachineRegistry(service.boot_dir.parent).statuses(["c1"])[0].client == "10.213.0.11"


def test_every_route_answers_only_its_methods_and_its_listener(service):
    assert refusal(service, request("POST", "/ipxe", "mac=52-54-00-00-00-11")).status == HTTPStatus.METHOD_NOT_ALLOWED
    wrong = refusal(service, request("GET", "/report", "mac=52-54-00-00-00-11&event=installed"))
    assert wrong.status == HTTPStatus.METHOD_NOT_ALLOWED and ("Allow", "POST") in wrong.headers
    assert refusal(service, request("GET", "/secrets", "token=x" * 3)).status == HTTPStatus.FORBIDDEN  # plain HTTP
    assert refusal(service, request("GET", "/ipxe", secure=True)).status == HTTPStatus.NOT_FOUND
    assert refusal(service, request("GET", "/nothing")).message == "no such endpoint '/nothing'"
    assert service.handle(request("HEAD", "/healthz", secure=True)).body == b"ok"
    assert {route.handler for route in ROUTES} <= {name for name in dir(BootService) if not name.startswith("_")}


def test_a_report_is_recorded_with_the_peer_the_transport_named(service):
    response = service.handle(request("POST", "/report", "mac=52-54-00-00-00-21&event=provision-failed&stage=disks",
                                      body=b"the disks stage failed\nmdadm: no /dev/sdz\n"))
    assert response.status == 200 and response.body == b"recorded provision-failed\n"
    status = MachineRegistry(service.boot_dir.parent).statuses(["w1"])[0]
    assert status.state == "failed" and status.client == "10.213.0.11"
    assert status.failure["reason"] == "the disks stage failed" and "/dev/sdz" in status.failure["log"]


def test_a_config_with_secrets_is_refused_without_an_https_listener(service):
    refused = refusal(service, request("GET", "/ignition", "mac=52-54-00-00-00-11"))
    assert refused.status == HTTPStatus.FORBIDDEN and "served only over HTTPS" in refused.message


def test_a_bug_in_a_handler_is_a_500_that_says_what_broke(service, monkeypatch):
    monkeypatch.setattr(service, "store", None)
    broken = refusal(service, request("GET", "/ipxe", "mac=52-54-00-00-00-11"))
    assert broken.status == HTTPStatus.INTERNAL_SERVER_ERROR and broken.message.startswith("internal error: ")
    assert "\n" not in broken.message  # one line for the log

"""Webhook URL validation (schemes, loopback/private/link-local addresses in every spelling, names that resolve
to them, the explicit allowances) and delivery that never raises. No servers: delivery to a closed local port."""

from __future__ import annotations

import pytest

from mlhub.errors import WebhookRefused
from mlhub.monitoring.webhooks import WebhookPolicy, deliver, validate_webhook_url
from tests.conftest import free_port

FAKE_DNS = {
    "hooks.example.com": ["93.184.215.14"],
    "internal.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.215.14", "192.168.1.9"],  # one private answer is enough to refuse
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["2606:4700::6810:84e5"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    if host not in FAKE_DNS:
        raise WebhookRefused(f"webhook host {host!r} does not resolve")
    return FAKE_DNS[host]


def check(url: str, policy: WebhookPolicy = WebhookPolicy()):
    return validate_webhook_url(url, policy, resolve=fake_resolve)


def test_public_http_and_https_urls_pass_with_their_port_and_path():
    ok = check("https://hooks.example.com/alerts?team=ml")
    assert (ok.scheme, ok.host, ok.port, ok.path, ok.addresses) == (
        "https", "hooks.example.com", 443, "/alerts?team=ml", ("93.184.215.14",))
    assert check("http://hooks.example.com:8080").port == 8080 and check("http://hooks.example.com").path == "/"
    assert check("https://v6.example.com/x").addresses == ("2606:4700::6810:84e5",)
    assert check("http://[2606:4700::6810:84e5]:9000/").host == "2606:4700::6810:84e5"
    assert check("HTTPS://8.8.8.8/hook").scheme == "https"


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://hooks.example.com/x", "gopher://hooks.example.com", "javascript:alert(1)",
    "hooks.example.com/x", "//hooks.example.com/x", "", "   ", "http://", "http:///path",
    "http://hooks.example.com/a b", "http://hooks.example.com\\@10.0.0.1/", "http://hooks.example.com:99999/",
    "http://hooks.example.com/\r\nX-Injected: 1", "https://" + "a" * 3000 + ".com",
])
def test_other_schemes_and_malformed_urls_are_refused(url):
    with pytest.raises(WebhookRefused):
        check(url)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f.0.0.1/", "http://017700000001/",
    "http://localhost:8080/", "http://LOCALHOST./", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/", "http://0.0.0.0/", "http://[::]/", "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/", "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.0.1/", "http://100.64.1.1/",
    "http://[fd00::1]/", "http://224.0.0.1/", "http://240.0.0.1/", "http://[64:ff9b::a00:1]/",
    "http://[2002:7f00:1::1]/", "http://internal.example.com/", "http://mixed.example.com/",
    "http://metadata.example.com/", "http://mapped.example.com/", "http://user:pw@127.0.0.1/",
    "http://hooks.example.com@127.0.0.1/",
])
def test_loopback_private_link_local_and_reserved_addresses_are_refused(url):
    with pytest.raises(WebhookRefused, match="refused|resolve"):
        validate_webhook_url(url, resolve=lambda h, p: FAKE_DNS[h] if h in FAKE_DNS else __import__(
            "mlhub.monitoring.webhooks", fromlist=["_resolve"])._resolve(h, p))


def test_names_that_do_not_resolve_are_refused():
    with pytest.raises(WebhookRefused, match="does not resolve"):
        validate_webhook_url("https://no-such-host.invalid/")


def test_the_allow_private_setting_and_the_host_allow_list():
    assert check("http://internal.example.com/", WebhookPolicy(allow_private=True)).addresses == ("10.1.2.3",)
    assert validate_webhook_url("http://127.0.0.1:9/", WebhookPolicy(allow_private=True)).port == 9
    by_name = WebhookPolicy(allowed_hosts=("internal.example.com",))
    assert check("http://internal.example.com/", by_name).host == "internal.example.com"
    with pytest.raises(WebhookRefused):
        check("http://metadata.example.com/", by_name)  # the allowance is for that host only
    by_net = WebhookPolicy(allowed_hosts=("10.0.0.0/8", "127.0.0.1"))
    assert check("http://internal.example.com/", by_net).addresses == ("10.1.2.3",)
    assert validate_webhook_url("http://localhost:1/", by_net).addresses == ("127.0.0.1",)
    with pytest.raises(WebhookRefused):
        check("http://mixed.example.com/", by_net)  # 192.168.1.9 is not on the list
    with pytest.raises(WebhookRefused):  # the allowances never allow other schemes
        check("file:///etc/passwd", WebhookPolicy(allow_private=True))


def test_delivery_never_raises_refuses_again_and_retries_network_errors():
    refused = deliver("http://127.0.0.1:9/", {"x": 1})
    assert not refused.ok and refused.attempts == 0 and "refused" in refused.error
    bad = deliver("file:///etc/passwd", {"x": 1})
    assert not bad.ok and bad.attempts == 0
    slept: list[float] = []
    closed = deliver(f"http://127.0.0.1:{free_port()}/hook", {"x": 1},
                     WebhookPolicy(allow_private=True, retries=2, timeout_s=1.0, backoff_s=0.1), sleep=slept.append)
    assert not closed.ok and closed.attempts == 3 and len(closed.history) == 3
    assert slept == [0.1, 0.2] and "ConnectionRefusedError" in closed.error

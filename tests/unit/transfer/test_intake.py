"""Whom the receiver accepts the data connection from."""

from __future__ import annotations

import ipaddress

import pytest

from utilities.transfer.intake import allowed_peers, normal_ip
from utilities.transfer.protocol import ERR_USAGE, ReceiveFailure


def test_addresses_compare_as_the_kernel_reports_peers() -> None:
    assert normal_ip("::ffff:10.0.0.7") == ipaddress.ip_address("10.0.0.7")
    assert normal_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert normal_ip("not an address") is None


def test_the_ssh_client_and_allow_from_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CLIENT", "10.0.0.7 40022 22")
    assert allowed_peers(None) == {ipaddress.ip_address("10.0.0.7")}
    assert allowed_peers("10.1.0.7") == {ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("10.1.0.7")}
    with pytest.raises(ReceiveFailure) as bad:
        allowed_peers("10.1.0.7; reboot")
    assert bad.value.kind == ERR_USAGE


def test_without_ssh_client_anyone_may_connect_and_it_is_said(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    assert allowed_peers(None) == frozenset()
    assert "accepting a connection from any address" in capfd.readouterr().err

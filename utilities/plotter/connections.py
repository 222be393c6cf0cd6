"""One SSH connection per harvester for a whole plotter run, shared by the sending workers.

A paramiko transport carries many channels at once, opened from any thread, so every session
and every single-plot receiver to one harvester runs on the same authenticated connection: no
key exchange and no login per plot.  The connection is opened when a worker first needs it
(a run that sends nothing to a harvester never connects), opened again if it has dropped, and
closed with the rest at the end of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from utilities.remote import connect
from utilities.settings.farm import HarvesterTarget, SshSettings
from utilities.transfer.channel import ExecFn, ParamikoExec


class Connections:
    """The run's SSH clients by harvester name; ``exec_for`` raises RemoteError when the
    harvester cannot be reached."""

    def __init__(self, ssh: SshSettings, connect_fn: Callable[[HarvesterTarget, SshSettings], Any] = connect) -> None:
        self.ssh = ssh
        self._connect = connect_fn
        self._clients: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.opened = 0  # connections made this run (the tests count them)

    def exec_for(self, target: HarvesterTarget) -> ExecFn:
        """Starts commands on ``target`` over the run's one connection to it."""
        with self._lock:
            lock = self._locks.setdefault(target.name, threading.Lock())
        with lock:  # two workers starting on one harvester at once connect once
            client = self._clients.get(target.name)
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = self._connect(target, self.ssh)
                self._clients[target.name] = client
                self.opened += 1
        return ParamikoExec(client)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

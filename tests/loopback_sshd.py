"""A real OpenSSH server on 127.0.0.1 for the transport tests: its own host key, a client key, a
known_hosts file with the host key, on a free port. Started by the ``loopback_ssh`` fixture."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


@dataclass
class LoopbackSsh:
    port: int
    user: str
    key: Path
    known_hosts: Path
    folder: Path
    process: subprocess.Popen

    def device_yaml(
        self, *, python: str, name: str = "loopback", runtimes: str = "[onnxruntime, openvino]", **ssh: object
    ) -> str:
        settings = {
            "host": "127.0.0.1", "port": self.port, "user": self.user, "key": str(self.key),
            "known_hosts": str(self.known_hosts), "python": python, "connect_timeout_s": 5,
        }  # fmt: skip
        settings.update(ssh)
        lines = [f"name: {name}", "transport: ssh", f"runtimes: {runtimes}", "precisions: [fp32, int8]",
                 "ssh:"] + [f"  {key}: {value}" for key, value in settings.items()]  # fmt: skip
        return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> LoopbackSsh:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = _free_port()
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
                "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "UsePAM no", "PubkeyAuthentication yes",
                "MaxStartups 50", "LogLevel ERROR",
            ]
        )
        + "\n"
    )  # fmt: skip
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation folder
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError("sshd did not start listening within 10 s")
    return LoopbackSsh(port, getpass.getuser(), folder / "client_key", folder / "known_hosts", folder, process)

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


def keys(folder: Path) -> int:
    """A fresh host key and client key in ``folder`` (mode 700), and a free loopback port with the host key in
    ``folder/known_hosts`` for it; returns the port. Shared with the ARM device (tests/arm_device.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for name in ("host_key", "client_key"):
        for path in (folder / name, folder / f"{name}.pub"):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    port = _free_port()
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return port


def sshd_config(port: int, *, host_key: str, authorized_keys: str, pid_file: str) -> str:
    """An sshd_config for 127.0.0.1:``port``: public-key logins only, quiet."""
    return "\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"AuthorizedKeysFile {authorized_keys}",
        f"PidFile {pid_file}", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "UsePAM no", "PubkeyAuthentication yes", "MaxStartups 50",
        "LogLevel ERROR",
    ]) + "\n"  # fmt: skip


def serve(
    argv: list[str], *, port: int, log: Path, seconds: float, poll: float, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start sshd (``argv``, in ``env``) with its output in ``log`` and wait until ``port`` listens; RuntimeError
    (with the log's tail) where it exits or does not listen within ``seconds``."""
    output = open(log, "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(argv, stdout=output, stderr=output, env=env)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-500:]}")
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(poll)
    process.kill()
    raise RuntimeError(f"sshd did not start listening within {seconds:.0f} s")


def start_sshd(folder: Path) -> LoopbackSsh:
    port = keys(folder)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    config = folder / "sshd_config"
    config.write_text(sshd_config(port, host_key=str(folder / "host_key"), pid_file=str(folder / "sshd.pid"),
                                  authorized_keys=str(folder / "authorized_keys")))  # fmt: skip
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation folder
    process = serve([SSHD, "-D", "-e", "-f", str(config)], port=port, log=folder / "sshd.log", seconds=10, poll=0.05)
    return LoopbackSsh(port, getpass.getuser(), folder / "client_key", folder / "known_hosts", folder, process)

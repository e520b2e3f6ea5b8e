"""An ARM device on 127.0.0.1: an arm64 Debian root, run through qemu-user (binfmt_misc), with the Python and
runtimes a Raspberry Pi user installs (ONNX Runtime, LiteRT; OpenVINO where it has an aarch64 wheel) and its own
OpenSSH server on a free loopback port, reached with a test key. The agent then runs on aarch64 and scores
artifacts with the ARM builds of the runtimes: their int8 kernels are not the x86 ones. Its timings are emulated
(neither a device's nor a prediction).

Used by the ``arm_ssh`` fixture (tests/conftest.py) and by ``.ci/run``::

    python tests/arm_device.py build     # build (or find) the cached root; prints its path
    python tests/arm_device.py check     # what is missing here, or "ready"

The root is cached under ``$EDGEFLOW_ARM_CACHE`` (default ``~/.cache/edgeflow/arm64``), keyed by the Debian
release, the packages and the runtime versions (this host's, so both sides run the same release): a second build
finds it. Building needs root, debootstrap and qemu-user-static; each missing piece is named by :func:`missing`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "python3-venv", "python3-pip", "openssh-server", "ca-certificates"]
#: the runtimes a Pi user pip-installs, at this host's versions (the same release, built for aarch64)
RUNTIMES = ["numpy", "onnxruntime", "ai-edge-litert"]
PYTHON = "/opt/edgeflow/bin/python"  # the root's virtual environment, where the runtimes are
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: the CPU qemu emulates: a Raspberry Pi 5's core (dot product, fp16 arithmetic; no i8mm, SVE or SME). qemu's
#: default ("max") has every aarch64 feature, and the runtimes would pick kernels no Pi runs.
CPU = "cortex-a76"
QEMU = "qemu-aarch64-static"
_LAYOUT = 1  # bump when the way the root is built changes


class RootUnavailable(RuntimeError):
    """The root could not be built here: Debian's mirror or the package index did not answer (this machine's
    network), said with the tool's last lines. The tests skip on it; a fault of edgeflow's is no such error."""


def pins() -> list[str]:
    """``name==version`` of each runtime as this host has it."""
    found = []
    for name in RUNTIMES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def cache_root() -> Path:
    return Path(os.environ.get("EDGEFLOW_ARM_CACHE", Path.home() / ".cache" / "edgeflow" / "arm64"))


def root_path() -> Path:
    """Where the root for today's packages and pins is (or will be) cached."""
    key = json.dumps([_LAYOUT, SUITE, PACKAGES, pins()])
    return cache_root() / f"{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def missing() -> str | None:
    """Why an ARM root cannot be built or run here (None: it can)."""
    if sys.platform != "linux":
        return "the ARM device needs Linux (binfmt_misc and chroot)"
    if os.geteuid() != 0:
        return "the ARM device needs root (debootstrap, chroot, mounts)"
    if platform_machine() == "aarch64":
        return None
    if not (shutil.which(QEMU) or Path(f"/usr/bin/{QEMU}").exists()):
        return f"{QEMU} is not installed (Debian: apt-get install qemu-user-static)"
    if not root_path().exists() and not shutil.which("debootstrap"):
        return "debootstrap is not installed (Debian: apt-get install debootstrap)"
    try:
        register_binfmt()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"binfmt_misc cannot run aarch64 binaries here: {exc}"
    return None


def platform_machine() -> str:
    return os.uname().machine


def register_binfmt() -> None:
    """Make the kernel run aarch64 binaries through qemu: mount binfmt_misc where it is not, and register Debian's
    qemu-aarch64 entry (its ``F`` flag opens the interpreter now, so it works inside a chroot) where it is not."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True, capture_output=True)
    entry = BINFMT / "qemu-aarch64"
    if entry.exists():
        if entry.read_text().splitlines()[0].strip() != "enabled":
            entry.write_text("1")
        return
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists():
        raise OSError(f"{conf} is missing (Debian's qemu-user-static ships it)")
    line = next(text for text in conf.read_text().splitlines() if text.startswith(":"))
    (BINFMT / "register").write_text(line)


def build(*, log=print) -> Path:
    """The cached root, built where it is not: debootstrap (arm64, minbase, the packages), then a virtual
    environment with the runtimes pip-installed at this host's versions. Built in ``<root>.partial`` and renamed
    at the end, so a stopped build leaves nothing that looks finished."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = root_path()
    if (root / ".edgeflow-ready").exists():
        return root
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        _unmount_all(partial)
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"debootstrap {SUITE} arm64 into {partial}")
    done = subprocess.run(
        ["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(partial),
         MIRROR],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RootUnavailable(f"debootstrap from {MIRROR} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    log(f"debootstrap done in {time.monotonic() - started:.0f} s; pip install {' '.join(pins())}")
    _copy_pip_settings(partial)
    with _mounted(partial):
        _chroot(partial, ["python3", "-m", "venv", str(Path(PYTHON).parents[1])])
        try:
            _chroot(partial, [PYTHON, "-m", "pip", "install", "--quiet", "--no-cache-dir", *pins()])
        except RuntimeError as exc:
            raise RootUnavailable(str(exc)) from None
        versions = _chroot(partial, [PYTHON, "-c", _VERSIONS]).stdout
    (partial / "root" / ".ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    (partial / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    (partial / ".edgeflow-ready").write_text(json.dumps({"seconds": round(time.monotonic() - started, 1),
                                                         "versions": json.loads(versions)}) + "\n")  # fmt: skip
    partial.rename(root)
    log(f"ARM root ready in {time.monotonic() - started:.0f} s: {root}")
    return root


_VERSIONS = (
    "import json, platform, importlib.metadata as m; "
    "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
    f"**{{n: m.version(n) for n in {RUNTIMES!r}}}}}))"
)


def _copy_pip_settings(root: Path) -> None:
    """This host's pip settings and CA bundle, so pip inside reaches the same package index."""
    for path in ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if Path(path).is_file():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    user = Path.home() / ".config" / "pip" / "pip.conf"
    if user.is_file():
        target = root / "root" / ".config" / "pip" / "pip.conf"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(user, target)


def _chroot(root: Path, argv: list[str]) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LANG": "C.UTF-8"}
    environment.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_FIND_LINKS"})
    result = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} in the ARM root failed: {(result.stderr or result.stdout)[-800:]}")
    return result


#: /proc and /dev, not /sys: this host's /sys describes x86 cores, and cpuinfo (in ONNX Runtime and XNNPACK) read
#: beside qemu's /proc crashes on it (ONNX Runtime 1.32's import segfaults); without /sys cpuinfo says it failed and
#: the kernels pick their instructions from the hardware capabilities qemu reports (getauxval)
_MOUNTS = [("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])]


class _mounted:
    """/proc and /dev inside the root (the runtimes read them), unmounted on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> _mounted:
        for name, source in _MOUNTS:
            target = self.root / name
            if not os.path.ismount(target):
                subprocess.run(["mount", *source, str(target)], check=True, capture_output=True)
        return self

    def __exit__(self, *exc) -> None:
        _unmount_all(self.root)


def _unmount_all(root: Path) -> None:
    for name in ("dev", "sys", "proc"):
        target = root / name
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@dataclass
class ArmSsh:
    """A running sshd inside the ARM root: where to reach it and how."""

    root: Path
    port: int
    key: Path
    known_hosts: Path
    folder: Path
    process: subprocess.Popen
    mounts: _mounted = field(repr=False)
    cpu: str = CPU
    user: str = "root"
    python: str = PYTHON

    def device_yaml(self, *, name: str = "arm-pi", runtimes: str = "[onnxruntime, litert]",
                    command_timeout_s: int = 600) -> str:  # fmt: skip
        """The device file; ``command_timeout_s`` bounds one command (scoring a split through qemu is one)."""
        return "\n".join([
            f"name: {name}", f"description: an emulated aarch64 Debian (qemu-user, {self.cpu}) on 127.0.0.1",
            "transport: ssh",
            "emulated: true", f"runtimes: {runtimes}", "precisions: [fp32, int8]", "ssh:", "  host: 127.0.0.1",
            f"  port: {self.port}", f"  user: {self.user}", f"  key: {self.key}", f"  known_hosts: {self.known_hosts}",
            f"  python: {self.python}", "  connect_timeout_s: 20", f"  command_timeout_s: {command_timeout_s}",
        ]) + "\n"  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.mounts.__exit__(None, None, None)


def start(folder: Path, *, root: Path | None = None, cpu: str = CPU) -> ArmSsh:
    """The root's own sshd (aarch64, through qemu) chrooted into it, on a free loopback port: a fresh host key and
    client key each start (the client's in ``folder``), root logs in with the key only. Every program it starts
    runs on qemu's model of ``cpu`` (``QEMU_CPU``, which sshd passes to each session)."""
    from loopback_sshd import keys, serve, sshd_config

    root = root or build()
    port = keys(folder)
    etc = root / "etc" / "ssh"
    shutil.copyfile(folder / "host_key", etc / "edgeflow_host_key")
    os.chmod(etc / "edgeflow_host_key", 0o600)
    authorized = root / "root" / ".ssh" / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    os.chmod(authorized, 0o600)
    (etc / "sshd_config_edgeflow").write_text(sshd_config(port, host_key="/etc/ssh/edgeflow_host_key",
                                                          authorized_keys="/root/.ssh/authorized_keys",
                                                          pid_file="/run/sshd-edgeflow.pid")
                                              + f"SetEnv QEMU_CPU={cpu}\n")  # fmt: skip
    (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    mounts = _mounted(root).__enter__()
    sshd = ["chroot", str(root), "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config_edgeflow"]
    try:  # sshd starts slowly under emulation
        process = serve(sshd, port=port, log=folder / "sshd.log", seconds=60, poll=0.2,
                        env={**os.environ, "QEMU_CPU": cpu})  # fmt: skip
    except RuntimeError:
        mounts.__exit__(None, None, None)
        raise
    return ArmSsh(root, port, folder / "client_key", folder / "known_hosts", folder, process, mounts, cpu=cpu)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    reason = missing()
    if command == "check":
        print(reason or f"ready ({root_path()}{', cached' if (root_path() / '.edgeflow-ready').exists() else ''})")
        return 0
    if command == "build":
        if reason:
            print(f"arm_device: {reason}", file=sys.stderr)
            return 1
        started = time.monotonic()
        root = build(log=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"{root} ({time.monotonic() - started:.1f} s)")
        return 0
    print(f"arm_device: unknown command {command!r} (build, check)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

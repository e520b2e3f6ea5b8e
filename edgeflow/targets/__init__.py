"""Where work runs (what Olive calls a system): this process, a device over SSH with the benchmark agent,
trtexec on a Jetson, a benchmark tool on a phone, or an estimate where none is attached.

* :mod:`~edgeflow.targets.run` decides where an artifact is timed and evaluated (``timing_plan``) and does it
  (``run_on_device``); each plan is a :class:`~edgeflow.targets.target.Target` (``TARGETS``): it times one
  artifact, times several in turn where it can, and says whether it computes logits;
* the transports reach a device: :mod:`~edgeflow.targets.local`, :mod:`~edgeflow.targets.ssh` (OpenSSH
  client), :mod:`~edgeflow.targets.adb`, over :class:`~edgeflow.targets.transport.Transport`;
* the benchmark agent (:mod:`~edgeflow.targets.agent`, standalone: it runs on the device) and its client
  (:mod:`~edgeflow.targets.agent_client`);
* the external tools, each run and its output parsed in one module: :mod:`~edgeflow.targets.trtexec`,
  :mod:`~edgeflow.targets.perf_test`, :mod:`~edgeflow.targets.benchmark_model`,
  :mod:`~edgeflow.targets.benchmark_app` (OpenVINO's, for side-by-side comparisons).
"""

from __future__ import annotations

from edgeflow.device import DeviceSpec
from edgeflow.targets.transport import CommandResult, Transport


def open_transport(device: DeviceSpec) -> Transport:
    """The transport the device's descriptor names (connection details already resolved)."""
    if device.transport == "ssh":
        from edgeflow.targets.ssh import SshTransport

        return SshTransport(device)
    if device.transport == "adb":
        from edgeflow.targets.adb import AdbTransport

        return AdbTransport(device)
    from edgeflow.targets.local import LocalTransport

    return LocalTransport(device)


__all__ = ["CommandResult", "Transport", "open_transport"]

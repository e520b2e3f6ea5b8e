"""Connect to a Ray cluster (``--ray auto|ADDRESS``, or the recipe's ``ray:`` key), or run in this process.

``auto`` joins the cluster this machine already runs (``ray start`` or ``edgeflow farm join``), else starts one
in this process for the run; ``HOST:PORT`` joins that head, and an unreachable head is one line before Ray's
own minutes of retries. Ray is imported only here and in the modules that need it: without ``--ray`` nothing
imports it, and without the ``ray`` extra installed ``--ray`` says how to get it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgeflow.cluster.resources import LOCAL_DEVICES, node_resources
from edgeflow.errors import ConfigError, first_line

# Ray resolves a loopback address to the machine's network address before it connects (so that a cluster
# reached as "127.0.0.1" is reachable from other machines); a farm bound to 127.0.0.1 (one machine, the
# tests) is reachable only as 127.0.0.1. This switch, Ray's own, keeps loopback as it is.
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's token authentication: anyone who reaches a cluster without it can run code there.
AUTH_MODE = "RAY_AUTH_MODE"


def require_ray() -> Any:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'edgeflow[ray]'") from None
    return ray


def split_address(address: str) -> tuple[str, int]:
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r}: give auto or HOST:PORT (the head's GCS port, 6379 by default)")
    return host.strip("[]"), int(port)


def host_of(address: str) -> str:
    """The host of ``HOST:PORT`` (``[::1]:6379`` too), or of a bare host (a node's IP address)."""
    if address.rpartition(":")[2].isdigit() and (not address.count(":") > 1 or address.startswith("[")):
        return split_address(address)[0]
    return address.strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keep_loopback() -> None:
    """Make Ray (this process and the Ray processes it starts) use 127.0.0.1 as it is: see LOOPBACK_SWITCH."""
    os.environ[LOOPBACK_SWITCH] = "0"
    import ray._private.ray_constants as constants  # read when Ray resolves an address, not only at import

    constants.ENABLE_RAY_CLUSTER = False


def token_auth() -> bool:
    """Turn on Ray's token authentication when this machine holds a token (``~/.ray/auth_token``, or
    ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``) and ``RAY_AUTH_MODE`` is unset; whether it is on."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # refreshes Ray's read of the mode


def use_token_auth() -> None:
    """Require Ray's token authentication in this process and the Ray processes it starts (the token:
    ``RAY_AUTH_TOKEN``, else ``~/.ray/auth_token``), even when Ray has already read its settings."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()


def check_reachable(address: str, *, timeout: float = 5.0) -> None:
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"Ray head {address} is unreachable ({reason}); is the farm's head running?") from None


def connect(address: str, *, start: bool = True) -> bool:
    """Join the cluster ``address`` names (``auto`` or ``HOST:PORT``); True when this call started Ray
    (and should shut it down), False when it joined a running driver session. With ``auto`` and no cluster
    running here, one is started for the run (reaching this machine's CPU) unless ``start`` is False."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "auto":
        running = _running_address()
        if running is None or not _reachable(running):  # none, or one recorded that has since stopped
            if not start:
                raise ConfigError("no Ray cluster runs on this machine: edgeflow farm join --head, or --address")
            ray.init(include_dashboard=False, resources=node_resources(LOCAL_DEVICES), **quiet)
            return True
        address = running
    host, _ = split_address(address)
    check_reachable(address)
    if is_loopback(host):
        keep_loopback()
    try:
        _init(ray, address, quiet)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        first = first_line(exc, limit=None)
        hint = "; copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN)" if "token" in str(exc) else ""
        raise ConfigError(f"could not join the Ray cluster at {address}: {first}{hint}") from None
    return True


def _init(ray: Any, address: str, quiet: dict[str, Any]) -> None:
    """``ray.init`` with the cluster's authentication: without a token first unless ``RAY_AUTH_MODE`` says
    otherwise (a driver that asks for tokens where the nodes send none loses their replies), then with this
    machine's token when the cluster asked for one (``edgeflow farm join`` starts farms that do)."""
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        if AUTH_MODE in os.environ or "token" not in str(exc).lower() or not token_auth():
            raise
        ray.init(address=address, **quiet)


@contextmanager
def connected(address: str | None, *, start: bool = True) -> Iterator[bool]:
    """``with connected(address) as on_ray``: connected for the block (False: in this process, no Ray)."""
    if address is None:
        yield False
        return
    started = connect(address, start=start)
    try:
        yield True
    finally:
        if started:
            require_ray().shutdown()


def _running_address() -> str | None:
    """The address of the cluster this machine runs (``RAY_ADDRESS``, or the one ``ray start`` recorded)."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    from ray._private.services import get_ray_address_from_environment

    try:
        return get_ray_address_from_environment(None, None)
    except Exception:  # Ray's own lookup (pgrep, address files) failed: as if none ran
        return None


def _reachable(address: str) -> bool:
    try:
        check_reachable(address, timeout=2.0)
    except ConfigError:
        return False
    return True

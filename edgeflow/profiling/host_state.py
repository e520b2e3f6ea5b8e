"""What a host was doing around a timing: its load average, CPU frequency and governor, temperature, and the
share of its CPU time that other processes took while the timing ran; :func:`watched` retries a timing the
others disturbed and says when it stayed disturbed (``noisy``).

The standard library only (Linux's /proc and /sys): the benchmark agent is shipped with this file beside it
and reads the same figures on the device. A figure the host does not expose (another OS, a container without
/sys/class/thermal) is None, and a timing whose share cannot be read is never called busy.
"""

import os
from glob import glob

# Other processes took more than this share of the host's CPU time (all cores, steal included) while the
# timing ran: the timing was disturbed. One other process spinning on one core of a 4-core host is 0.25.
BUSY_SHARE = 0.2
BUSY_RETRIES = 1


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def state():
    """The host now: 1-minute load average, cores, mean current frequency (MHz), governor, hottest zone (C)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    frequencies = [_read(path) for path in glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    khz = [int(value) for value in frequencies if value and value.isdigit()]
    governors = sorted(
        {value for value in map(_read, glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")) if value}
    )
    temperatures = []
    for path in glob("/sys/class/thermal/thermal_zone*/temp"):
        value = _read(path)
        if value and value.lstrip("-").isdigit():
            temperatures.append(int(value) / 1000)
    return {
        "load_1m": load,
        "cpus": os.cpu_count() or 1,
        "cpu_mhz": round(sum(khz) / len(khz) / 1000, 1) if khz else None,
        "governor": ",".join(governors) or None,
        "temperature_c": round(max(temperatures), 1) if temperatures else None,
    }


def cpu_counters():
    """(all cores' clock ticks, the busy ones among them, this process's and its waited-for children's), or
    None where /proc is not there."""
    stat, own = _read("/proc/stat"), _read("/proc/self/stat")
    if not stat or not own:
        return None
    values = [int(value) for value in stat.splitlines()[0].split()[1:9]]  # user nice system idle iowait irq ...
    total = sum(values)
    fields = own.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    mine = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total, total - values[3] - values[4], mine


def others_share(before, after):
    """The share of the host's CPU time other processes took between two :func:`cpu_counters` readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    others = (after[1] - before[1]) - (after[2] - before[2])
    return round(max(0.0, others / (after[0] - before[0])), 3)


def watched(timing, *, busy_share=BUSY_SHARE, retries=BUSY_RETRIES):
    """Run ``timing()`` with the host's state read before and after; while other processes took more than
    ``busy_share`` of the CPU meanwhile, run it again, up to ``retries`` more times. Returns the last result
    and what was seen: ``noisy`` when the last run was still disturbed (kept, and said)."""
    attempts = 0
    while True:
        attempts += 1
        before, start = state(), cpu_counters()
        result = timing()
        end, after = cpu_counters(), state()
        share = others_share(start, end)
        busy = share is not None and share > busy_share
        if not busy or attempts > retries:
            break
    seen = {
        "before": before, "after": after, "others_cpu_share": share, "busy_share": busy_share,
        "attempts": attempts, "noisy": busy,
    }  # fmt: skip
    return result, seen

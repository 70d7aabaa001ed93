"""What the bench reads from /proc: a process's peak RSS, the machine's busy CPU time."""

from __future__ import annotations

import os


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (per address space). Not ru_maxrss: after exec it starts
    from the RSS of the process that forked it (here the bench, with its references loaded)."""
    return status(os.getpid()).get("VmHWM", 0) / 1024


def status(pid: int) -> dict[str, int]:
    """VmHWM and RssAnon of a process, in kB (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "RssAnon:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def busy_s() -> float:
    """CPU-seconds all processes of the machine have used (from /proc/stat), all cores."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

"""Test hooks that kill a process at a named point, to test crash safety for real.

``PREP_KILL_AT="<point>[:<arg>][:<signal>]"`` makes the process that reaches `point` (with that
`arg`, if given) send itself `signal` (default KILL; TERM and INT also work). Points:

- coordinator: ``start`` (`python -m prep` before its imports), ``exit`` (the run is over, the
  summary printed), ``after-task:<n>`` (the n-th task finished by this process is recorded),
  ``commit`` (tasks done, before assembling), ``publish-moved`` (the new data directory is in
  OUT), ``publish-manifest`` (the new manifest is written, the old version not yet removed);
- worker: ``task-start:<task id>``, ``task-before-done:<task id>`` (part files written, no
  completion record yet).

Unset (always, outside tests), every call is one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PREP_KILL_AT"


def maybe_kill(point: str, arg: object = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    want, _, sig = rest.partition(":")
    if name == point and (not want or want == str(arg)):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))

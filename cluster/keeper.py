"""Keep the loop actors' ``run`` going across actor restarts.

Ray restarts a dead actor (``max_restarts``) by calling its constructor again; the long-running ``run``
call that died with it is not re-issued. :class:`LoopKeeper` is the driver-side supervisor that does so:
it watches each actor's ``run`` reference and calls ``run`` again when it ends with an actor error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("opsloop.keeper")

WATCH_EVERY_S = 0.5
#: A re-issued run that dies within QUICK_S, GIVE_UP_AFTER times in a row: the actor has no restarts left.
QUICK_S = 2.0
GIVE_UP_AFTER = 20


class LoopKeeper:
    """A daemon thread that re-issues ``run`` on loop actors after they restart.

    Args:
        handles: Name → actor handle with an async ``run`` method.
        on_restart: Called with the actor's name each time ``run`` is re-issued (for the chaos bench).
    """

    def __init__(self, handles: dict[str, Any], on_restart: Callable[[str], None] | None = None) -> None:
        self.handles = dict(handles)
        self.on_restart = on_restart
        self.refs: dict[str, Any] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.handles, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="opsloop-keeper", daemon=True)

    def start(self) -> None:
        """Call ``run`` on every actor and start watching."""
        for name, handle in self.handles.items():
            self.refs[name] = handle.run.remote()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the actors are stopped by their owner)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        import ray
        from ray.exceptions import RayActorError

        issued = dict.fromkeys(self.refs, time.monotonic())
        quick: dict[str, int] = dict.fromkeys(self.refs, 0)
        while not self._stop.is_set():
            by_ref = {ref: name for name, ref in self.refs.items()}
            if not by_ref:
                return
            done, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=WATCH_EVERY_S)
            for ref in done:
                name = by_ref[ref]
                try:
                    ray.get(ref, timeout=1)
                    self.refs.pop(name)  # run returned: the actor was stopped on purpose
                    continue
                except RayActorError:
                    # Died; when it is restarting, a new call queues until the new instance is up, and run
                    # resumes from Redis. A call that fails at once again and again means no restarts are left.
                    quick[name] = quick[name] + 1 if time.monotonic() - issued[name] < QUICK_S else 0
                    if quick[name] >= GIVE_UP_AFTER:
                        log.warning("%s is dead for good (no restarts left)", name)
                        self.refs.pop(name)
                        continue
                except Exception:  # noqa: BLE001 - run itself raised (a bug); re-issue after a pause
                    log.exception("%s.run failed; re-issuing", name)
                if self._stop.is_set():
                    return
                time.sleep(0.1 * quick[name])
                self.restarts[name] += 1
                issued[name] = time.monotonic()
                self.refs[name] = self.handles[name].run.remote()
                if self.on_restart is not None:
                    self.on_restart(name)

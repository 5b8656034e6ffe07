"""The daemon: one synchronous `selectors` loop that ties the parts together.

Each turn: select with a timeout equal to the time left until the earliest
deadline (push, liveness pass, watchdog ping, trace reopen), dispatch ready
fds (trace data, signals), then run the deadlines that are due.  Signal
handlers only write to a wakeup socket; all work happens in the loop.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from typing import Callable, Mapping, Optional

from . import __version__
from .api import GthulhuClient
from .config import Config, ConfigError, describe_changes, load_config
from .logsetup import set_level
from .metrics import make_metrics
from .notify import Notifier, watchdog_interval
from .procfs import ProcFS
from .push import Pusher
from .report import Reporter, status_line
from .state import OwnedIds, StateFile, runtime_dir, state_dir
from .strategy import build_strategies, target_ids
from .tracepipe import TraceSource
from .tracker import TaskTracker

log = logging.getLogger(__name__)

FIRST_PUSH_DELAY = 0.25  # let the first lines arrive so the first push is not a needless clear
STOP_PUSH_BUDGET = 1.5  # clear_on_stop push must fit in systemd's expectation of a quick stop
HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
# A reader that has caught up with a live trace_pipe gets a page or two per
# wake-up; Python's cost per wake-up then dwarfs the cost per line.  After a
# small turn the fd is left alone this long so lines gather in the kernel's
# buffer (1.4 MB per CPU by default: far more than this many ms of lines).
TRACE_REST = 0.005
SMALL_TURN = 64 * 1024


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Daemon:
    def __init__(self, config: Config, config_path: str, *,
                 env: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 procfs: Optional[ProcFS] = None) -> None:
        self.config = config
        self.config_path = config_path
        self._clock = clock
        self._wall = wall_clock
        self.notifier = Notifier(env)
        self._watchdog = watchdog_interval(env, os.getpid())
        self.tracker = TaskTracker(procfs or ProcFS(), config.match, wall_clock)
        self.source = TraceSource(config.trace.pipe, clock)
        self.selector = selectors.DefaultSelector()
        self.pusher: Optional[Pusher] = None
        self._registered_fd: Optional[int] = None
        self._trace_rest_until: Optional[float] = None
        self._stopping = False
        self._loaded_at = wall_clock()
        self._state_dir = state_dir(env)
        self.reporter = Reporter(make_metrics(config.metrics), StateFile(runtime_dir(env)),
                                 clock, wall_clock)
        now = clock()
        self._next_liveness = now + config.strategy.liveness_interval
        self._next_watchdog = now
        self._wake_r, self._wake_w = socket.socketpair()

    # --- set-up and tear-down -----------------------------------------------

    def setup(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_signal)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wakeup fd carries the signal number
        self._log_start()
        if self.source.open():
            self._register_source()

    def _log_start(self) -> None:
        cfg = self.config
        log.info("gtp5g-operator %s starting: config %s, trace %s, API %s, matching %s",
                 __version__, self.config_path, self.source.path, cfg.api.url,
                 ", ".join(cfg.match.comm))
        if not cfg.match.exe and not cfg.match.uid:
            log.warning("match.exe and match.uid are both empty: any local user can name a "
                        "process %s and get it boosted; pin them in %s",
                        "/".join(cfg.match.comm), self.config_path)
        self._check_watchdog_budget(cfg)

    def _check_watchdog_budget(self, cfg: Config) -> None:
        # One push may hold the loop for api.timeout; the watchdog allows twice
        # the ping interval between pings.
        if self._watchdog is not None and cfg.api.timeout > self._watchdog * 1.5:
            log.warning("api.timeout (%g s) is close to the watchdog's limit (%g s): a hung "
                        "API could get the service killed; lower api.timeout or raise "
                        "WatchdogSec=", cfg.api.timeout, self._watchdog * 2)

    def _make_pusher(self) -> Pusher:
        return Pusher(self._make_client(self.config), self.config.strategy.resync_interval,
                      self._clock, self._wall, first_push_delay=FIRST_PUSH_DELAY,
                      mode=self.config.strategy.mode, owned=self._owned(self.config))

    def _owned(self, cfg: Config) -> Optional[OwnedIds]:
        if cfg.strategy.mode != "merge":
            return None
        return OwnedIds(self._state_dir, cfg.api.url)

    def _make_client(self, cfg: Config) -> GthulhuClient:
        return GthulhuClient(cfg.api.url, cfg.public_key_pem, cfg.api.public_key,
                             cfg.api.timeout, cfg.api.ca_file, self._clock, self._wall)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.source.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        if self.pusher is not None:
            self.pusher.client.close()

    def _register_source(self) -> None:
        fd = self.source.fd
        if fd is not None and self._registered_fd is None:
            self.selector.register(fd, selectors.EVENT_READ, self._on_trace)
            self._registered_fd = fd

    def _unregister_source(self) -> None:
        if self._registered_fd is not None:
            self.selector.unregister(self._registered_fd)
            self._registered_fd = None

    # --- the loop -------------------------------------------------------------

    def run(self) -> int:
        self.setup()
        self.notifier.send("READY=1", "STATUS=" + self.status_line())
        self.pusher = self._make_pusher()
        self._publish()
        try:
            while not self._stopping:
                self.run_once()
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            log.info("stopping")
            if self.config.strategy.clear_on_stop:
                self._clear_on_stop()
        finally:
            self.reporter.state.remove()  # `status` then says: not running
            self.close()
        return 0

    def _publish(self) -> None:
        self.reporter.publish(self.config, self._loaded_at, self.tracker, self.source,
                              self.pusher)

    def run_once(self) -> None:
        timeout = max(0.0, self._next_deadline() - self._clock())
        for key, _ in self.selector.select(timeout):
            key.data()
        self._run_due()

    def _next_deadline(self) -> float:
        deadlines = [self._next_liveness]
        if self.pusher is not None:
            deadlines.append(self.pusher.next_deadline())
        if self._watchdog is not None:
            deadlines.append(self._next_watchdog)
        if self.source.fd is None:
            deadlines.append(self.source.retry_at)
        if self._trace_rest_until is not None:
            deadlines.append(self._trace_rest_until)
        return min(deadlines)

    def _run_due(self) -> None:
        now = self._clock()
        if self._watchdog is not None and now >= self._next_watchdog:
            self.notifier.send("WATCHDOG=1", "STATUS=" + self.status_line())
            self._next_watchdog = now + self._watchdog
        if self.source.fd is None and now >= self.source.retry_at and self.source.open():
            self._register_source()
        if self._trace_rest_until is not None and now >= self._trace_rest_until:
            self._trace_rest_until = None
            self._register_source()
        if now >= self._next_liveness:
            self._liveness_pass()
            self._next_liveness = now + self.config.strategy.liveness_interval
        if self.pusher is not None and self.pusher.is_due(now) and not self._stopping:
            self._push()

    # --- handlers ---------------------------------------------------------------

    def _on_trace(self) -> None:
        before = self.source.bytes
        tids, still_open = self.source.read_turn()
        if not still_open:
            self._unregister_source()
        elif self.source.bytes - before < SMALL_TURN:
            self._unregister_source()
            self._trace_rest_until = self._clock() + TRACE_REST
        if tids and self.tracker.observe(tids):
            self.reporter.tasks_added(self.tracker.take_added())
            if self.pusher is not None:
                self.pusher.mark_changed()
        self.reporter.trace_turn(self.source)

    def _on_signal(self) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s", signal.Signals(signum).name)
                self._stopping = True

    def _liveness_pass(self) -> None:
        changed = self.tracker.prune()
        self.tracker.forget_negatives()
        if changed and self.pusher is not None:
            self.pusher.mark_changed()

    def _push(self) -> None:
        assert self.pusher is not None
        self.tracker.prune()  # never push a task that exited or whose ID was reused
        ids = target_ids(self.tracker.snapshot(), self.config.strategy.targets)
        result = self.pusher.push(build_strategies(ids, self.config.strategy))
        self.reporter.pushed(result, ids, self.pusher)
        self._publish()
        self.notifier.send("STATUS=" + self.status_line())

    def _clear_on_stop(self) -> None:
        assert self.pusher is not None
        result = self.pusher.push([], budget=STOP_PUSH_BUDGET)
        if result.ok:
            log.info("cleared our strategies (clear_on_stop)")
        else:
            log.warning("could not clear strategies on stop: %s", result.error)

    # --- reload ---------------------------------------------------------------

    def reload(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self.reporter.reloaded(False)
        else:
            self.apply(new)
            self.reporter.reloaded(True)
            self._publish()
        self.notifier.send("READY=1", "STATUS=" + self.status_line())

    def apply(self, new: Config) -> None:
        """Swap in a validated config, touching only what changed."""
        old, changed = self.config, describe_changes(self.config, new)
        self.config = new
        self._loaded_at = self._wall()
        if not changed:
            log.info("configuration reloaded: nothing changed")
            return
        log.info("configuration reloaded: %s changed", ", ".join(changed))
        if old.log != new.log:
            set_level(new.log.level)
        if old.metrics != new.metrics:
            self._apply_metrics(new)
        if old.trace != new.trace:
            self._unregister_source()
            self.source.set_setting(new.trace.pipe)
            self._register_source()
        if old.match != new.match and self.tracker.set_match(new.match) and self.pusher:
            self.pusher.mark_changed()
        if old.strategy.liveness_interval != new.strategy.liveness_interval:
            self._next_liveness = self._clock() + new.strategy.liveness_interval
        if self.pusher is None:
            return
        api_identity = (new.api.url, new.public_key_pem, new.api.ca_file)
        if (old.api.url, old.public_key_pem, old.api.ca_file) != api_identity:
            self.pusher.client.close()
            self.pusher.set_client(self._make_client(new))
        else:
            self.pusher.client.timeout = new.api.timeout
        if old.api.timeout != new.api.timeout:
            self._check_watchdog_budget(new)
        if old.strategy.resync_interval != new.strategy.resync_interval:
            self.pusher.set_resync_interval(new.strategy.resync_interval)
        if (old.strategy.mode, old.api.url) != (new.strategy.mode, new.api.url):
            self.pusher.mode, self.pusher.owned = new.strategy.mode, self._owned(new)
        values = ("priority", "execution_time_ns", "targets", "mode")
        if any(getattr(old.strategy, v) != getattr(new.strategy, v) for v in values):
            self.pusher.push_now()

    def _apply_metrics(self, new: Config) -> None:
        if self.reporter.metrics is None:
            self.reporter.metrics = make_metrics(new.metrics)
        else:
            self.reporter.metrics.configure(new.metrics)

    def status_line(self) -> str:
        return status_line(self.tracker, self.pusher, self._clock())


"""The daemon: one synchronous `selectors` loop over its components, a turn as
core/component.py describes it.  Signal handlers only note the signal and wake
the loop (service/signals.py).
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Set

from .. import __version__
from ..config import Config, ConfigError, describe_changes
from ..config.load import cleartext_credentials, emptied
from ..config.schema import DROP_IN_DIR
from ..core.component import Component
from ..core.procfs import ProcFS, namespace_refusal
from ..core.schedstat import SchedstatSampler
from ..core.tracker import ProcessView, TaskTracker
from ..gthulhu.registry import build_writer
from ..gthulhu.writer import ApiWriter
from ..trace.feed import TraceFeed
from ..trace.readers import READERS, Reader
from .endpoint import Endpoint
from .exits import ExitWatch
from .guard import GuardedComponent
from .liveness import LivenessPass
from .logsetup import LogLevel
from .notify import Notifier, watchdog_interval
from .publisher import Publisher
from .pusher import Pusher
from .runtime_files import Heartbeat, runtime_dir, state_dir
from .scheduler_watch import SchedulerWatch
from .signals import SignalWaker
from .vocabulary import VOCABULARY, load
from .watchdog import WatchdogPinger

log = logging.getLogger(__name__)

CPU_WAIT_WINDOW = 60.0  # seconds over which status and doctor judge how long tasks waited
FIRST_PUSH_DELAY = 0.25  # let the first lines arrive so the first push is not a needless clear
STOP_PUSH_BUDGET = 1.5  # clear_on_stop must fit in systemd's expectation of a quick stop
MAX_SLEEP = 3600.0


def uid_warning(cfg: Config, config_path: str) -> str:
    """The start-up warning while match.uid is empty, naming where to set it: the
    file that set it to [], else a drop-in (the packaged main file is never edited)."""
    names = "/".join(cfg.match.comm)
    why = (f"any local user can name a process {names} and get it boosted"
           if not cfg.match.exe else
           "match.exe alone does not pin the gNB: any user can run that executable "
           "with LD_PRELOAD, under a debugger or with a hostile environment and get "
           "their own code boosted")
    where = cfg.origins.get("match.uid") or "a drop-in, e.g. " + os.path.join(
        os.path.dirname(os.path.abspath(config_path)), DROP_IN_DIR, "50-site.toml")
    return f"match.uid is empty: {why}; pin the gNB's user with match.uid in {where}"


class Daemon:
    def __init__(self, config: Config, config_path: str, *,
                 env: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 procfs: Optional[ProcFS] = None, sysfs: str = "/sys",
                 make_writer: Optional[Callable[[Config], ApiWriter]] = None,
                 readers: Sequence[Reader] = READERS) -> None:
        # Every component is built here, so the daemon's parts read as one list
        # (longer than the package's other functions for that reason).
        self.config = config
        self.config_path = config_path
        self.env = env
        self._clock = clock
        self.loaded_mono = clock()
        self.notifier = Notifier(env)
        self.state_directory = state_dir(env)
        # Exits are watched through pidfds only where /proc is the kernel's (not a test's tree).
        pidfds = getattr(os, "pidfd_open", None) if procfs is None else None
        procfs = procfs or ProcFS()
        self.tracker = TaskTracker(procfs, config.match, clock)
        self.cpu_wait = SchedstatSampler(procfs.root, clock, CPU_WAIT_WINDOW)
        self.scheduler = SchedulerWatch(sysfs)
        self.trace = TraceFeed(config.trace, clock, self._on_tids, readers)
        self._make_writer = make_writer or (
            lambda cfg: build_writer(cfg, self.state_directory, clock, wall_clock))
        self.pusher = Pusher(self._make_writer(config), config.strategy.resync_interval,
                             self._desired, clock,
                             first_push_delay=FIRST_PUSH_DELAY, make_writer=self._make_writer)
        self.publisher = Publisher(self, runtime_dir(env), clock, wall_clock)
        self.watchdog = WatchdogPinger(self.notifier, watchdog_interval(env, os.getpid()),
                                       clock, self._status_line)
        self.liveness = LivenessPass(self.tracker, config.strategy.liveness_interval, clock,
                                     self.pusher.mark_changed)
        self.exits = ExitWatch(self.tracker, self.pusher.mark_changed, pidfds)
        self.log_level = LogLevel(config.log.level)
        self.signals = SignalWaker(self.reload, self.stop, self._report,
                                   self.log_level.toggle_debug)
        self.endpoint = Endpoint(config.metrics.listen, runtime_dir(env), clock)
        self._wire()
        # run_due order: signals and pings first, the push (which may block) last.
        # Fixed for the daemon's life (a reload reconfigures them, it does not swap them).
        # Each is called through a guard: a bug in one never ends the process (guard.py).
        self.components: List[Component] = [GuardedComponent(c, clock) for c in (
            self.exits, self.signals, self.watchdog, self.trace, self.liveness, self.endpoint,
            self.log_level, self.publisher, self.pusher)]
        self.heartbeat: Optional[Heartbeat] = None
        self.selector = selectors.DefaultSelector()
        self._registered: Dict[Component, Collection[int]] = {}
        self._stopping = False

    def _wire(self) -> None:
        """The few calls components make to each other."""
        self.pusher.before_push = self._before_exchange
        self.pusher.on_pushed = self.publisher.pushed
        self.liveness.names_wanted = lambda: self.pusher.writer.names_tasks()
        self.liveness.checks += [self.trace.liveness_check, self.scheduler.check,
                                 self._sample_cpu_wait, self._check_heartbeat,
                                 self.publisher.publish]

    # --- set-up and tear-down -----------------------------------------------

    def setup(self) -> None:
        self.signals.install()
        self.heartbeat = Heartbeat(runtime_dir(self.env))
        self._log_start()
        self.scheduler.check()
        self.trace.open()
        self.publisher.publish()
        # Before READY=1, so that a probe right after it is never refused; after the
        # first publish, so that the endpoint process finds the files it serves.
        self.endpoint.open()

    def _log_start(self) -> None:
        cfg = self.config
        log.info("gtp5g-operator %s starting: config %s, trace %s (%s), API %s (flavor %s), "
                 "matching %s", __version__, self.config_path, self.trace.source.path,
                 self.trace.source.kind,
                 cfg.api.url, cfg.api.flavor, ", ".join(cfg.match.comm))
        self._warn_about(cfg)
        self.watchdog.check_budget(cfg.api.timeout)

    def _warn_about(self, cfg: Config) -> None:
        """What the configuration leaves open: said at start and by every reload that
        changes it (the way a drop-in is applied)."""
        if not cfg.match.uid:
            log.warning("%s", uid_warning(cfg, self.config_path))
        cleartext = cleartext_credentials(cfg, VOCABULARY)
        if cleartext:
            log.warning("%s", cleartext)
        # Warned, not refused: a file another reader takes is no reason to stop boosting.
        if cfg.metrics.textfile and not cfg.metrics.textfile.endswith(".prom"):
            log.warning("metrics.textfile %s does not end in .prom: node-exporter's textfile "
                        "collector reads only *.prom files, and a purge removes only those",
                        cfg.metrics.textfile)

    def close(self) -> None:
        for component in reversed(self.components):
            component.close()
        if self.heartbeat is not None:
            self.heartbeat.close()
        self.selector.close()
        self.notifier.close()

    # --- the loop -------------------------------------------------------------

    def run(self) -> int:
        """The loop, until a stop signal; `setup()` first (its failures are the start's)."""
        self.notifier.send("READY=1", "STATUS=" + self.publisher.status_line())
        try:
            while not self._stopping:
                self.run_once()
            self._shutdown()
        finally:
            self.close()
        return 0

    def run_once(self) -> None:
        self._sync_watched()
        now = self._clock()
        deadline = self._next_deadline()
        if self.heartbeat is not None:  # the loop's promise of when it turns next
            self.heartbeat.beat(now, min(deadline, now + MAX_SLEEP) + self.config.api.timeout)
        timeout = min(max(0.0, deadline - now), MAX_SLEEP)
        for key, _ in self.selector.select(timeout):
            owner: Component = key.data
            # An earlier callback of this turn may have closed or replaced this fd.
            if key.fd in owner.watched_fds():
                owner.on_readable(key.fd)
        self._run_due()

    def _next_deadline(self) -> float:
        return min(c.next_deadline() for c in self.components)

    def _run_due(self) -> None:
        now = self._clock()
        for component in self.components:
            if now >= component.next_deadline():
                component.run_due(now)

    def _sync_watched(self) -> None:
        """Keep the selector equal to what the components want watched.  A component
        returns a new collection whenever its fds change (core/component.py), so an
        unchanged one costs one identity test per turn.

        Every owner is asked, and every stale registration dropped, before any new one
        is made: an fd one owner closed this turn (the trace source at a FIFO's end)
        may already be the number of one another owner opened since (the exit watch's
        pidfd, opened in watched_fds()), and registering that while the old owner's
        registration stood failed as "already registered"."""
        changed = [(owner, fds) for owner in self.components
                   if (fds := owner.watched_fds()) is not self._registered.get(owner)]
        for owner, _ in changed:
            for fd in self._registered.pop(owner, ()):
                self.selector.unregister(fd)
        for owner, fds in changed:
            if self._register(owner, fds):
                self._registered[owner] = fds

    def _register(self, owner: Component, fds: Collection[int]) -> bool:
        done: List[int] = []
        for fd in fds:
            try:
                self.selector.register(fd, selectors.EVENT_READ, owner)
            except (OSError, ValueError, KeyError) as exc:
                for registered in done:
                    self.selector.unregister(registered)
                owner.fd_failed(fd, exc if isinstance(exc, OSError) else OSError(str(exc)))
                return False
            done.append(fd)
        return True

    # --- what the components call ----------------------------------------------------

    def _on_tids(self, tids: Set[int]) -> None:
        if self.tracker.observe(tids):
            self.publisher.tasks_added(self.tracker.take_added())
            self.pusher.mark_changed()

    def _before_exchange(self) -> None:
        """Before an API exchange, which may hold the loop for up to api.timeout: ping
        the watchdog (watchdog.py's bound), and move the heartbeat's promise to the
        exchange's end.  The turn's own promise counts one api.timeout, the one in force
        at its start: a reload's turn may hold two exchanges (leaving the old server,
        then the push) or a longer api.timeout, and /health said "stalled" meanwhile."""
        self.watchdog.ping_if_stale()
        if self.heartbeat is not None:
            self.heartbeat.extend(self._clock() + self.pusher.writer.timeout)

    def _sample_cpu_wait(self) -> None:
        self.cpu_wait.sample(self.tracker.tracked_tasks())

    def _check_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.check()

    def _desired(self) -> List[ProcessView]:
        self.tracker.prune()  # never push a task that exited or whose ID was reused
        return self.tracker.snapshot()

    def _status_line(self) -> str:
        """STATUS= of the watchdog's pings: the clear on stop pings before its exchange,
        and the running line then replaced STOPPING=1's for the rest of the stop."""
        return "stopping" if self._stopping else self.publisher.status_line()

    def _report(self) -> None:
        for line in self.publisher.report_lines():
            log.info("%s", line)

    def stop(self, why: str) -> None:
        log.info("received %s", why)
        self._stopping = True
        self.pusher.stopping = True

    def _shutdown(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        log.info("stopping")
        if self.config.strategy.clear_on_stop:
            try:
                error = self.pusher.clear(STOP_PUSH_BUDGET)
            except Exception:  # a bug must not keep the rest of the stop from happening
                log.exception("bug: clearing this host's strategies on stop failed")
                return
            if error is None:
                # each writer said what it removed, or that nothing was provably ours
                log.info("clear_on_stop done")
            else:
                # The stop's own budget first: the error's "(api.timeout N s)" names
                # the longer limit, which raising would not help.
                log.warning("could not clear this host's strategies on stop (within the "
                            "stop's %g s): %s; left behind: %s", STOP_PUSH_BUDGET, error,
                            self.pusher.writer.left_behind())

    # --- reload ---------------------------------------------------------------

    def reload(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            # before the files are read: what an empty file leaves out may fail first
            caught_empty = emptied(self.config)
            if caught_empty:
                raise ConfigError(caught_empty)
            new = load(self.config_path, self.env)
            # what `run` refuses at start must not be reached by a reload either, nor
            # what the server found by api.flavor = "auto" cannot take
            refusal = (namespace_refusal(new.trace.allow_pid_namespace)
                       or self.pusher.writer.unsuited(new))
            if refusal:
                raise ConfigError(refusal)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self.publisher.reloaded(False)
        else:
            self.apply(new)
            self.publisher.reloaded(True)
        finally:  # whatever happened, systemd must hear that the reload is over
            self.notifier.send("READY=1", "STATUS=" + self.publisher.status_line())

    def apply(self, new: Config) -> None:
        """Swap in a validated config; each component takes its own part."""
        old, changed = self.config, describe_changes(self.config, new)
        self.config = new
        self.loaded_mono = self._clock()
        if not changed:
            log.info("configuration reloaded: nothing changed")
            return
        log.info("configuration reloaded: %s changed", ", ".join(changed))
        if (old.match, old.api.url, old.api.flavor, old.metrics.textfile) != (
                new.match, new.api.url, new.api.flavor, new.metrics.textfile):
            self._warn_about(new)
        push_now = False
        for component in self.components:
            push_now |= component.reconfigure(old, new)
        if push_now:
            self.pusher.push_now()

"""The configuration's shape, in one place: every key's type, default, validator
and documentation together, on the dataclass field that holds it.

Pure data.  `parse` validates a TOML document against these fields;
`render` prints the example file (packaging/config.toml, generated from here
and checked by a test) and `check-config --print`.  The fields that are not
in the TOML (what the named files hold, read at load time) are at the end of
`Config` and kept out of its repr, so a secret read from a file can never
reach a log line through a dataclass repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional, Tuple, Union

from . import values as v

DEFAULT_CONFIG_PATH = "/etc/gtp5g-operator/config.toml"
DROP_IN_DIR = "config.d"  # beside the main file: *.toml, read in lexical order
CREDENTIAL_NAME = "gthulhu-password"  # LoadCredential=gthulhu-password
AUTO = "auto"  # api.flavor / trace.format: find out

Targets = Literal["tgid", "tid", "both"]
Mode = Literal["overwrite", "merge"]
Level = Literal["debug", "info", "warning", "error"]


def setting(default: Any, check: Optional[Callable[[Any], Any]], doc: str,
            choices: str = "") -> Any:
    """A configuration key: its default, its validator and what the example file says.

    `choices` names a vocabulary the caller of `parse` supplies (the flavors,
    the trace readers): its validator is built from that, not fixed here.
    """
    return field(default=default, metadata={"check": check, "doc": doc, "choices": choices})


@dataclass(frozen=True)
class TraceConfig:
    """The kernel trace the gtp5g tracer writes into."""

    pipe: str = setting("auto", v.path_or("auto", '"auto" or an absolute path'), """
        Path of the kernel's trace_pipe.  "auto" tries /sys/kernel/tracing/trace_pipe,
        then /sys/kernel/debug/tracing/trace_pipe.  A FIFO works too (replays, tests).""")
    format: str = setting(AUTO, None, """
        How to read it: "raw" reads the binary per-CPU ring buffers beside trace_pipe
        (per_cpu/cpu*/trace_pipe_raw: a fraction of the CPU the text costs), "text"
        reads trace_pipe itself, "auto" uses raw when the pipe is tracefs's trace_pipe
        and its per-CPU files can be opened, else text.""", choices="readers")
    allow_pid_namespace: bool = setting(False, v.boolean, """
        trace_pipe reports task IDs of the host's (initial) PID namespace: the service
        refuses to start inside another PID namespace (a container without the host's
        PIDs), where /proc would name other processes.  Set this only when the trace
        source itself speaks this namespace's IDs (e.g. a test FIFO).""")


@dataclass(frozen=True)
class MatchConfig:
    """Which processes are the gNB."""

    comm: Tuple[str, ...] = setting(("nr-gnb",), v.comm_list, """
        A task is boosted when its PROCESS (thread-group leader) has one of these names,
        exactly (not a substring: "nr-gnbx" does not match).""")
    exe: Tuple[str, ...] = setting((), v.exe_list, """
        Any local user can name a process "nr-gnb".  Pin the real gNB by the user it runs
        as, and by its executable, e.g.:
            uid = [0]
            exe = ["/usr/local/bin/nr-gnb"]
        A path that is a symlink counts as the file it leads to (the kernel names that).
        The executable alone does not pin it: any user can run that file with LD_PRELOAD,
        under a debugger or with a hostile environment, and get their own code boosted;
        set uid too.  Empty lists mean "any" (a warning is logged at start while uid is
        empty).  With the Decision Maker and the Manager these only decide whether this
        host publishes its rule: those servers match by name, so any process named like a
        tracked task is boosted too (the service reads back what the scheduler boosts and
        warns about each such task).""")
    uid: Tuple[int, ...] = setting((), v.uid_list, """
        Allowed real uids of the gNB process (see exe above).""")


@dataclass(frozen=True)
class ApiConfig:
    """The Gthulhu server."""

    url: str = setting("http://127.0.0.1:8080", v.api_url, """
        Base URL of the Gthulhu server.  https:// URLs verify the certificate against the
        system CAs, or against ca_file when set.  No user:password@, query or fragment,
        and no IPv6 zone id or link-local address (sockets cannot use them).""")
    flavor: str = setting(AUTO, None, """
        Which Gthulhu answers there: "auto" finds out (before the first push and after
        reconnecting); the others are listed in gtp5g-operator(8) and the README
        ("Gthulhu: the flavors").""", choices="flavors")
    public_key: str = setting("/etc/gtp5g-operator/jwt_public_key.pem",
                              v.path_or(None, "an absolute path"), """
        The RSA public key (PEM, "BEGIN PUBLIC KEY"; not PKCS#1's "BEGIN RSA PUBLIC KEY")
        matching the server's JWT private key (v0 and the Decision Maker; the Manager logs
        in with a user name and password instead).""")
    timeout: float = setting(5.0, v.seconds(0.1, 60.0), """
        Seconds allowed for one whole exchange with the API (credentials + write + the
        read-back of what the scheduler will boost).""")
    ca_file: str = setting("", v.path_or("", 'an absolute path or ""'), """
        CA bundle (PEM) for https:// URLs; "" means the system CAs.""")
    node_name: str = setting("", v.node_name, """
        Decision Maker and Manager: this node's name in the rule, as Kubernetes names it
        ("" = this host's name, lower case, without the domain).""")
    username: str = setting("", v.username, """
        Manager only: the user to log in as.""")
    decision_maker_url: str = setting("", v.optional_api_url, """
        Manager only: the URL of this node's Decision Maker, read (never written) after
        each write to verify what the scheduler will boost; its token is obtained with
        api.public_key (the Decision Maker's key).  "" = not verified (the Manager itself
        does not resolve PIDs).""")
    password_file: str = setting("", v.password_file, """
        Manager only: a file holding the password on one line (mode 0600; refused when
        all users can read it).  Unset: the systemd credential "gthulhu-password" (put the
        password in /etc/credstore/gthulhu-password, mode 0600).""")


@dataclass(frozen=True)
class StrategyConfig:
    """What is written, and when."""

    priority: Union[bool, int] = setting(True, v.priority, """
        Priority: true/false for the 2025 API (v0), an integer for later releases.  The
        Decision Maker and the Manager take an integer from 1 to 20; true means 1 there
        (the value that boosts in both of the scheduler's modes).""")
    execution_time_ns: int = setting(20_000_000, v.positive_ns, """
        Time slice in nanoseconds (20 ms).""")
    targets: Targets = setting("both", v.choice("tgid", "tid", "both"), """
        v0 only: which IDs to post: "tgid" (priority is looked up by process), "tid" (the
        time slice is looked up by thread) or "both".  (The Decision Maker and the Manager
        pick the tasks from the rule by name.)""")
    mode: Mode = setting("overwrite", v.choice("overwrite", "merge"), """
        "overwrite": the posted list is exactly this host's set (the v0 API holds one list
        for everyone: other writers' strategies are replaced).  "merge" (v0 only): GET the
        list, replace only the entries this host owns (the IDs it pushed, remembered in
        /var/lib/gtp5g-operator across restarts), keep everyone else's, POST the result.
        See gtp5g-operator(8) for the race.""")
    resync_interval: float = setting(10.0, v.seconds(0.5, 3600.0), """
        Seconds between full re-sends and read-backs (heals a restarted API server).""")
    liveness_interval: float = setting(5.0, v.seconds(0.1, 3600.0), """
        Seconds between checks that tracked tasks are still alive (and of how long they
        wait for a CPU).""")
    clear_on_stop: bool = setting(False, v.boolean, """
        On stop, remove this host's strategies ("overwrite": post an empty list; "merge":
        remove only the entries this host owns; Decision Maker and Manager: delete this
        host's rule).""")


@dataclass(frozen=True)
class LogConfig:
    """Logging (to stderr; the journal under systemd)."""

    level: Level = setting("info", v.choice("debug", "info", "warning", "error"), """
        debug, info, warning or error.""")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics and /health, both off by default (they need
    python3-prometheus-client)."""

    listen: str = setting("", v.listen_address, """
        HTTP endpoint "address:port" serving /metrics and /health ("" = off).""")
    allow_remote: bool = setting(False, v.boolean, """
        A non-loopback listen address is refused unless this is true.""")
    textfile: str = setting("", v.path_or("", 'an absolute path or ""'), """
        node-exporter textfile collector file, rewritten atomically after each push (e.g.
        "/var/lib/prometheus/node-exporter/gtp5g_operator.prom"; the service must be
        allowed to write there, see README).""")


def section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": True})


@dataclass(frozen=True)
class Config:
    trace: TraceConfig = section(TraceConfig)
    match: MatchConfig = section(MatchConfig)
    api: ApiConfig = section(ApiConfig)
    strategy: StrategyConfig = section(StrategyConfig)
    log: LogConfig = section(LogConfig)
    metrics: MetricsConfig = section(MetricsConfig)
    # Not from TOML: where it came from and what the named files hold, read
    # once at load so that no request re-reads a file and a reload can tell
    # whether a file's content changed.
    source: str = ""  # the main file
    files: Tuple[str, ...] = ()  # the main file and its drop-ins, in the order read
    origins: Mapping[str, str] = field(default_factory=dict)  # "api.url" -> the file that set it
    public_key_pem: str = field(default="", repr=False)
    ca_pem: str = field(default="", repr=False)
    password: str = field(default="", repr=False)  # secret: never logged or written
    node_name: str = ""  # api.node_name, or the host name when that is empty

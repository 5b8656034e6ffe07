"""The package's shape: layers imported only downwards, and one registry each for the
Gthulhu flavors and the trace readers — a new one is one module and one line.

Layers, lowest first: files → config → core → trace, gthulhu → service → commands → cli.
"""

from __future__ import annotations

import ast
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import pytest

import gtp5g_operator
from gtp5g_operator.commands.doctor.api import ApiProbe
from gtp5g_operator.commands.status import format_status
from gtp5g_operator.config import (
    ApiConfig,
    Config,
    StrategyConfig,
    TraceConfig,
    Vocabulary,
    parse_config,
)
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.detect import AutoWriter, Probe, detect
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.registry import FLAVORS, build_writer
from gtp5g_operator.gthulhu.writer import ApiWriter, Holdings, Login
from gtp5g_operator.trace.readers import READERS, choose
from gtp5g_operator.trace.source import TraceSource, Turn

# the package being tested: the checkout's, or the installed one (autopkgtest)
PACKAGE = Path(gtp5g_operator.__file__).resolve().parent
LAYERS = {"files": 0, "config": 1, "core": 2, "trace": 3, "gthulhu": 3, "service": 4,
          "commands": 5, "cli": 6, "__main__": 7, "__init__": 0}


def layer_of(module: str) -> str:
    """'config' for gtp5g_operator.config.load, 'files' for gtp5g_operator.files,
    '__init__' for a name of the package itself (gtp5g_operator.__version__)."""
    parts = module.split(".")
    if len(parts) < 2:
        return "__init__"
    top = PACKAGE / parts[1]
    return parts[1] if top.is_dir() or top.with_suffix(".py").exists() else "__init__"


def imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module) of every import of the package in one file, those under
    `if TYPE_CHECKING:` included."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("gtp5g_operator"):
                names = [f"{target}.{a.name}" for a in node.names] if node.module is None \
                    else [target]
                yield from ((node.lineno, n) for n in names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names
                        if a.name.startswith("gtp5g_operator"))


def test_no_import_runs_from_a_lower_layer_to_a_higher_one() -> None:
    wrong: List[str] = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        own = layer_of(".".join(rel.parts))
        for line, target in imports(path):
            other = layer_of(target)
            if other not in LAYERS:
                wrong.append(f"{rel}:{line}: {target} is in no layer")
            elif LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and other != own):
                wrong.append(f"{rel}:{line}: {own} imports {target} ({other})")
    assert wrong == []


# --- a fourth flavor: one module, one registry line --------------------------------------


class NoLogin(Login):
    """The dummy server wants no credentials."""

    def valid(self) -> bool:
        return True

    def obtain(self, deadline: float) -> None:
        pass

    def drop(self) -> None:
        pass


class DummyWriter(ApiWriter):
    """A made-up Gthulhu flavor, recognised by a route of its own."""

    name = "dummy"
    display = "Dummy Strategy Server"
    summary = "a made-up server for this test"
    credential = "public-key"
    writes: ClassVar[List[List[int]]] = []

    def __init__(self, http: JsonHttp, strategy: StrategyConfig) -> None:
        super().__init__(http, strategy)
        self.login = NoLogin(http, time.monotonic, time.time)

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        return probe.status("GET", "/dummy/hello", None, deadline) == 200

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> DummyWriter:
        return cls(http, config.strategy)

    def authenticate(self, deadline: float) -> bool:
        return False

    def drop_credentials(self) -> None:
        pass

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        self.writes.append(sorted(t for v in views for t in v.tids))
        return len(self.writes[-1])

    def clear(self, deadline: float) -> None:
        pass

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        return Holdings("the dummy server holds what it holds", [])


# the one line a new flavor adds to the registry
WITH_DUMMY: Tuple[Type[ApiWriter], ...] = (*FLAVORS, DummyWriter)


@pytest.fixture
def dummy_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/dummy/hello"
            self.send_response(200 if ok else 404)
            body = b'{"hello": true}' if ok else b'{"message": "Not Found"}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_new_flavor_is_one_class_and_one_line(dummy_server: str, tmp_path: Path) -> None:
    vocabulary = Vocabulary(WITH_DUMMY, tuple(r.kind for r in READERS))
    # the configuration takes its name (and refused it before the registry line)
    text = f'[api]\nflavor = "dummy"\nurl = "{dummy_server}"\n'
    config = parse_config(text, vocabulary)
    assert config.api.flavor == "dummy"
    with pytest.raises(Exception, match='flavor: expected one of "auto", "decision-maker"'):
        parse_config(text, Vocabulary(FLAVORS, ("raw", "text")))
    # the writer factory builds it, and `auto` detection finds it
    assert isinstance(build_writer(config, str(tmp_path), flavors=WITH_DUMMY), DummyWriter)
    http = JsonHttp(dummy_server, 2.0)
    try:
        import time

        found = detect(Probe(http, Config(api=ApiConfig(url=dummy_server))), WITH_DUMMY,
                       time.monotonic() + 2)
        assert found is DummyWriter
        auto = build_writer(Config(api=ApiConfig(url=dummy_server)), str(tmp_path),
                            flavors=WITH_DUMMY)
        assert isinstance(auto, AutoWriter)
        auto.authenticate(time.monotonic() + 2)
        assert auto.describe()["flavor"] == "dummy"
    finally:
        http.close()
    # status shows it, doctor recognises the server and reads its holdings
    status = format_status({"api": {"flavor": "dummy", "url": dummy_server}}, 0.0)
    assert f"API:        {dummy_server} (dummy)" in status
    checks = {c.name: c for c in ApiProbe(config, (), None, str(tmp_path),
                                          flavors=WITH_DUMMY).run()}
    assert checks["api flavor"].saw == ("the server is a Gthulhu Dummy Strategy Server; "
                                        "api.flavor = dummy")
    assert checks["api strategies"].saw.startswith("the dummy server holds what it holds")


# --- a third reader: one module, one list line -----------------------------------------------


class DummyReader(TraceSource):
    """A made-up reader that takes any path ending in .dummy."""

    kind = "dummy"

    @classmethod
    def problem(cls, pipe: str, proc: str = "/proc") -> str:
        return "" if pipe.endswith(".dummy") else "not a .dummy file"

    def _open_fds(self) -> Tuple[int, ...]:
        return ()

    def _close_fds(self) -> None:
        pass

    def _read_turn(self, fd: int) -> Turn:
        return Turn()


def test_a_new_reader_is_one_class_and_one_line(tmp_path: Path) -> None:
    readers: Tuple[Type[TraceSource], ...] = (DummyReader, *READERS)  # auto tries it first
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    vocabulary = Vocabulary(FLAVORS, tuple(r.kind for r in readers))
    config = parse_config('[trace]\nformat = "dummy"\n', vocabulary)
    assert choose(config.trace, readers) is DummyReader
    assert choose(TraceConfig(pipe="/x/events.dummy"), readers) is DummyReader  # auto
    assert choose(TraceConfig(pipe=str(fifo)), readers).kind == "text"
    with pytest.raises(Exception, match=r"trace\.format: expected one of"):
        parse_config('[trace]\nformat = "dummy"\n', Vocabulary(FLAVORS, ("raw", "text")))


def test_every_flavor_states_its_facts() -> None:
    for flavor in FLAVORS:
        facts: Dict[str, Any] = {k: getattr(flavor, k) for k in (
            "name", "display", "summary", "credential", "sends_names")}
        assert all(v != "?" and v != "" for v in facts.values() if isinstance(v, str)), facts
        assert flavor.create is not ApiWriter.create, f"{flavor.name} has no writer factory"
        assert flavor.probe is not ApiWriter.probe, f"{flavor.name} has no detection probe"

"""One version per release, written once (gtp5g_operator/__init__.py) and said the
same everywhere: `--version`, the build backend's metadata, debian/changelog
and NEWS, the man page; and the pointer conffile the preinst writes is the one
the package ships."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gtp5g_operator import __version__
from gtp5g_operator.cli import main

REPO = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # the fallback the package uses too
    import tomli as tomllib

CHANGELOG_HEAD = re.compile(r"^gtp5g-operator \(([^)]+)\) [a-z-]+; urgency=\w+$")


def changelog_versions(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := CHANGELOG_HEAD.match(line))]


def test_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), __version__


def test_the_command_line_says_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"gtp5g-operator {__version__}"


def test_the_installed_program_says_the_version() -> None:
    out = subprocess.run([sys.executable, "-m", "gtp5g_operator", "--version"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"gtp5g-operator {__version__}", out


def test_the_build_backend_reads_the_version_from_the_package() -> None:
    """No second copy in pyproject.toml: hatchling takes it from __init__.py."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "gtp5g_operator/__init__.py"
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["project"]["license"] == "Apache-2.0"  # SPDX (PEP 639)


def test_debian_changelog_releases_this_version_first() -> None:
    versions = changelog_versions((REPO / "debian" / "changelog").read_text())
    assert versions[0] == __version__, versions
    assert len(versions) == len(set(versions)), versions  # every release its own entry


def test_the_changelog_entry_says_what_changed() -> None:
    text = (REPO / "debian" / "changelog").read_text()
    entry = text.split("\n -- ", 1)[0]
    bullets = [line for line in entry.splitlines() if line.strip().startswith(("*", "-"))]
    assert len(bullets) >= 5, entry


def test_the_changelog_entry_names_every_exit_status_of_run() -> None:
    """An exit status of run is what an admin's tooling meets: 75 (EX_TEMPFAIL, another
    daemon on the state or runtime directory) came with this release and the entry,
    which names 71 and 78, did not say it."""
    entry = (REPO / "debian" / "changelog").read_text().split("\n -- ", 1)[0]
    entries = man_section("EXIT STATUS").split(".TP\n.B ")[1:]
    codes = [e.split("\n", 1)[0] for e in entries if ".BR run" in e]
    assert [c for c in codes if c != "0"
            and not re.search(rf"\bexits? {re.escape(c)}(?!\w)", entry)] == []


def test_news_speaks_of_this_release_or_an_earlier_one() -> None:
    news = changelog_versions((REPO / "debian" / "NEWS").read_text())
    known = changelog_versions((REPO / "debian" / "changelog").read_text())
    assert news and set(news) <= set(known), (news, known)


def test_the_man_page_names_this_version() -> None:
    th = (REPO / "packaging" / "gtp5g-operator.8").read_text().splitlines()[0]
    assert th.startswith(".TH GTP5G-OPERATOR 8 ") and f'"gtp5g-operator {__version__}"' in th, th


def man_section(name: str) -> str:
    """The text of one `.SH` section of the man page."""
    text = (REPO / "packaging" / "gtp5g-operator.8").read_text()
    return text.split(f"\n.SH {name}\n", 1)[1].split("\n.SH ", 1)[0]


def test_the_man_page_names_every_file_of_the_state_directory() -> None:
    """What an admin finds in /var/lib/private/gtp5g-operator (and purging removes) is
    each named in FILES: the Decision Maker's rule and the Manager's policy went
    unnamed ("the Manager policy's id")."""
    from gtp5g_operator.gthulhu.decision_maker import RULE_FILE
    from gtp5g_operator.gthulhu.manager import POLICY_FILE
    from gtp5g_operator.gthulhu.merge import OWNED_FILE
    from gtp5g_operator.service.runtime_files import TEXTFILE_RECORD

    files = man_section("FILES")
    missing = [f for f in (OWNED_FILE, POLICY_FILE, RULE_FILE, TEXTFILE_RECORD)
               if f".I {f}\n" not in files]
    assert not missing, f"gtp5g-operator(8) FILES does not name {missing}"


def test_the_man_page_names_every_flavor() -> None:
    """The example configuration says api.flavor's values "are listed in
    gtp5g-operator(8)": the page named only v0 and auto."""
    from gtp5g_operator.gthulhu.registry import FLAVORS

    page = (REPO / "packaging" / "gtp5g-operator.8").read_text()
    assert "are listed in gtp5g-operator(8)" in (REPO / "packaging" / "config.toml").read_text()
    unnamed = [f.name for f in FLAVORS if f'api.flavor " = " {f.name}' not in page]
    assert not unnamed, f"gtp5g-operator(8) does not name api.flavor {unnamed}"


def test_exit_78_of_run_is_documented_for_another_pid_namespace(
        capsys: pytest.CaptureFixture[str]) -> None:
    """run exits 78 in another PID namespace with a valid configuration
    (tests/faults: test_refuses_to_run_in_another_pid_namespace); the man page's 78
    and run's --help said only "the configuration is invalid"."""
    entry = man_section("EXIT STATUS").split("\n.B 78\n", 1)[1].split("\n.TP\n", 1)[0]
    assert "trace.allow_pid_namespace" in entry and "PID namespace" in entry
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "PID namespace" in capsys.readouterr().out


def test_the_man_page_says_a_reload_into_a_refused_pid_namespace_is_rejected() -> None:
    """SIGHUP's entry said only an invalid file is rejected; a valid one that turns
    trace.allow_pid_namespace off in another PID namespace is rejected too (9486c16,
    tests/faults: test_a_reload_that_disallows_the_pid_namespace_is_rejected)."""
    sighup = man_section("SIGNALS").split("\n.B SIGHUP\n", 1)[1].split("\n.TP\n", 1)[0]
    assert "trace.allow_pid_namespace" in sighup and "PID namespace" in sighup, sighup


COMMANDS = ("run", "check-config", "status", "doctor")


def man_exit_statuses() -> dict[str, list[str]]:
    """{command: the exit statuses gtp5g-operator(8) gives it}, from EXIT STATUS's
    entries: `.B 78` then `.BR run " and " check-config :` lines naming the commands."""
    given: dict[str, list[str]] = {c: [] for c in COMMANDS}
    for entry in man_section("EXIT STATUS").split(".TP\n.B ")[1:]:
        code, body = entry.split("\n", 1)
        for line in body.splitlines():
            if line.startswith(".BR "):
                for word in re.sub(r'"[^"]*"', " ", line[4:]).split():
                    if word in given and code not in given[word]:
                        given[word].append(code)
    return given


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_names_every_failure_the_man_page_gives_it(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The man page gives run's 71 (EX_OSERR: too few file descriptors or too little
    memory to start); run --help, which names its 78, did not.  And status --help had
    no description at all: a monitoring script's author found neither its 3 (not
    running) nor its 1 (state.json unreadable) there."""
    given = man_exit_statuses()
    assert {"71", "75", "78"} <= set(given["run"]) and {"1", "3"} <= set(given["status"]), given
    with pytest.raises(SystemExit):
        main([command, "--help"])
    helped = " ".join(capsys.readouterr().out.split()).lower()
    # 0, and 141 (the reader of the output left: every filter's), need no --help line
    unsaid = [c for c in given[command] if c not in ("0", str(128 + signal.SIGPIPE))
              and not re.search(rf"exit {re.escape(c.lower())}(?!\w)|\b{re.escape(c.lower())} "
                                rf"when", helped)]
    assert not unsaid, f"{command} --help does not name exit status {unsaid}: {helped}"


def test_the_unit_does_not_restart_what_a_restart_cannot_cure() -> None:
    """run's 75 (another daemon on the state or runtime directory: one run by hand) was
    restarted by Restart=on-failure every RestartSec=2s + 0.2 s, which never reaches
    systemd's start limit (5 in 10 s): an ERROR and systemd's failure lines every 2 s for
    as long as that daemon ran, and each failed start's stop removed RuntimeDirectory=,
    the runtime directory a daemon run by hand uses by default."""
    from gtp5g_operator.cli import EX_CONFIG, EX_TEMPFAIL

    unit = (REPO / "systemd" / "gtp5g-operator.service").read_text()
    prevented = {int(code) for line in unit.splitlines()
                 if line.startswith("RestartPreventExitStatus=")
                 for code in line.split("=", 1)[1].split()}
    assert {EX_CONFIG, EX_TEMPFAIL} <= prevented, prevented
    assert f"RestartPreventExitStatus={' '.join(map(str, sorted(prevented)))}" in man_section(
        "EXIT STATUS")


def test_the_readme_says_a_reload_of_a_file_check_config_refuses_fails() -> None:
    """The unit's ExecReload= runs check-config before the SIGHUP, so `systemctl reload`
    of a broken file fails (the system test proves it); the README's systemd section
    said it "still succeeds", contradicting "Install and operate" and the unit."""
    unit = (REPO / "systemd" / "gtp5g-operator.service").read_text()
    reload = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert "check-config" in reload[0] and "-HUP" in reload[-1], reload
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`systemctl reload` still succeeds" not in readme
    assert "a file it refuses makes `systemctl reload` fail" in readme


def test_the_debian_rows_give_the_sandbox_rating_the_sandbox_paragraph_gives() -> None:
    """`systemd-analyze security --offline=yes` rates the unit 2.0 under Debian 12's
    systemd 252 (and the Sandbox paragraph says 2.0 under 252 and 257, since ProcSubset=
    went); the Installing table's Debian rows still said 1.9."""
    readme = (REPO / "README.md").read_text()
    rated = re.search(r"rates the unit \*\*(\d\.\d)\*\*", readme)
    assert rated, "the Sandbox paragraph gives no rating"
    rows = [line for line in readme.splitlines() if line.startswith("| Debian 1")]
    assert len(rows) == 2 and all(f"sandbox {rated.group(1)};" in row for row in rows), rows


def test_the_preinst_writes_exactly_the_shipped_conffile() -> None:
    """dpkg installs the new conffile without asking only when the file on disk is
    byte-identical to it: the preinst's copy must be the shipped one."""
    preinst = (REPO / "debian" / "gtp5g-operator.preinst").read_text()
    embedded = preinst.split("<<'POINTER'\n", 1)[1].split("\nPOINTER\n", 1)[0] + "\n"
    assert embedded == (REPO / "packaging" / "config.toml.conffile").read_text()


def test_the_readme_names_every_test_marker_and_what_test_fast_leaves_out() -> None:
    """README's "Test markers" lacked `contract`, and its `make test-fast` line named
    only the kernel, container and version-matrix tests as left out (the faults and
    contract tests are too)."""
    markers = [m.split(":")[0] for m in tomllib.loads(
        (REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]]
    readme = (REPO / "README.md").read_text()
    listed = readme.split("\nTest markers: ", 1)[1].split("\n\n", 1)[0]
    assert [m for m in markers if f"`{m}`" not in listed] == []
    makefile = (REPO / "Makefile").read_text()
    left_out = re.findall(r"not (\w+)", makefile.split("\ntest-fast:", 1)[1].split("\n\n")[0])
    line = next(x for x in readme.splitlines() if x.startswith("make test-fast "))
    assert left_out and [m for m in left_out if not re.search(rf"\b{m}\b", line)] == []
    # ... and what it runs: every folder of tests/ with a module no left-out marker
    # marks.  README and `make help` said "only the unit, property and integration
    # tests", and it runs tests/vm's pure parts too (the `vm` tests it deselects).
    marked = re.compile(rf"^pytestmark = pytest\.mark\.({'|'.join(left_out)})\b", re.MULTILINE)
    ran = sorted({m.parent.name for m in (REPO / "tests").glob("*/test_*.py")
                  if not marked.search(m.read_text())})
    said = " ".join(readme.split()).split("`make test-fast` runs only ", 1)[1].split(". ")[0]
    helped = next(x for x in makefile.splitlines() if '"make test-fast ' in x)
    assert ran and [d for d in ran if not (re.search(rf"\b{d}\b", said)
                                           and re.search(rf"\b{d}\b", helped))] == []


DOC = "/usr/share/doc/gtp5g-operator/"


def shipped_doc_names() -> set[str]:
    """The names under DOC as debhelper makes them from the source tree:
    dh_installdocs (debian/*.docs, README.Debian, NEWS as NEWS.Debian, the
    changelog, copyright), dh_installexamples (examples/), then dh_compress, which
    gzips every file there over 4 KiB and every changelog and NEWS — but copyright
    and any path holding one of the rules' `dh_compress -X` patterns."""
    debian = REPO / "debian"
    sources = {Path(line).name: REPO / line
               for line in (debian / "gtp5g-operator.docs").read_text().split()}
    sources.update({"README.Debian": debian / "README.Debian",
                    "NEWS.Debian": debian / "NEWS", "changelog": debian / "changelog",  # native
                    "copyright": debian / "copyright"})
    sources.update({f"examples/{Path(line).name}": REPO / line
                    for line in (debian / "gtp5g-operator.examples").read_text().split()})
    rules = (debian / "rules").read_text()
    kept = [x for line in re.findall(r"^\tdh_compress\b(.*)$", rules, re.MULTILINE)
            for x in re.findall(r"-X(\S+)", line)]

    def compressed(name: str, source: Path) -> bool:
        if name == "copyright" or any(x in name for x in kept):
            return False
        return source.stat().st_size > 4096 or name.startswith(("changelog", "NEWS"))

    return {name + ".gz" if compressed(name, src) else name for name, src in sources.items()}


def test_every_documentation_path_we_name_is_shipped_under_that_name() -> None:
    """The unit's Documentation=, gtp5g-operator(8)'s SEE ALSO and the README named
    /usr/share/doc/gtp5g-operator/README.Debian, which the package shipped only as
    README.Debian.gz (dh_compress gzips documentation over 4 KiB): `systemctl status`
    and the man page pointed at a file that did not exist."""
    texts = [REPO / p for p in ("README.md", "packaging/gtp5g-operator.8",
                                "packaging/config.toml", "packaging/config.toml.conffile",
                                "debian/README.Debian", "debian/NEWS", "debian/changelog",
                                "debian/gtp5g-operator.preinst", "debian/gtp5g-operator.postrm")]
    texts += sorted((REPO / "systemd").glob("*.service"))
    texts += sorted((REPO / "gtp5g_operator").rglob("*.py"))
    named = {(str(p.relative_to(REPO)), m)
             for p in texts
             for m in re.findall(re.escape(DOC) + r"([\w./-]*\w)", p.read_text())}
    shipped = shipped_doc_names()
    # as tests/system/test_debian_package.py finds them in the built package
    assert {"README.md.gz", "NEWS.Debian.gz", "changelog.gz", "LICENSE.gz", "copyright",
            "examples/config.toml"} <= shipped, shipped
    assert named and sorted((where, name) for where, name in named if name not in shipped) == []


def test_the_performance_figures_are_those_of_the_run_they_cite() -> None:
    """README's Performance table is the last whole run's, row for row, and the memory
    figures quoted elsewhere (the unit's MemoryMax= and the endpoint, in README and in
    the unit's comment) are that run's: they said 31.2, 30.4 and 29 MB, figures of no
    file in bench/results/, while the run cited measured 31.6 MB and 33.6 at the peak."""
    readme = (REPO / "README.md").read_text()
    run = re.search(r"The last whole run \(`bench/results/([\w-]+)\.\*`\)",
                    " ".join(readme.split()))
    assert run, "README's Performance section cites no whole run"
    cited = REPO / "bench" / "results" / f"{run.group(1)}.md"
    if not (REPO / "bench" / "results").is_dir():  # (a git checkout always has them)
        pytest.skip("no bench/results/ here: the Debian source package leaves the "
                    "benchmark results out (packaging/build-deb)")
    bench = cited.read_text()
    rows = bench.splitlines()
    table = readme.split("\n| measure | result | target | met |\n", 1)[1].split("\n\n", 1)[0]
    assert [r for r in table.splitlines()[1:] if r not in rows] == []

    def figures(pattern: str) -> tuple[str, ...]:
        found = re.search(pattern, bench, re.MULTILINE)
        assert found, pattern
        return found.groups()

    (rss,) = figures(r"^\| RSS after start / 1,000 tasks / 100,000-ID flood \| "
                     r"[\d.]+ / [\d.]+ / ([\d.]+) MB")
    (peak,) = figures(r"^\| daemon \+ endpoint, one memory cgroup.*; peak ([\d.]+) MB")
    daemon, daemon_anon, endpoint, endpoint_anon = figures(
        r"^\| after the flood: daemon RSS \(anon\) / endpoint RSS \(anon\) \| "
        r"([\d.]+) \(([\d.]+)\) / ([\d.]+) \(([\d.]+)\) MB")
    said = " ".join(readme.split())
    assert f"twice the measured peak ({rss} MB" in said
    assert (f"{peak} MB at the peak (daemon RSS {daemon} MB of which {daemon_anon} "
            f"anonymous, endpoint {endpoint} MB of which {endpoint_anon}") in said
    assert f"(RSS {endpoint} MB against" in said
    unit = " ".join((REPO / "systemd" / "gtp5g-operator.service").read_text()
                    .replace("#", " ").split())
    assert f"Measured peak RSS: {rss} MB (README.md, Performance), {peak} MB" in unit
    entry = " ".join((REPO / "debian" / "changelog").read_text().split("\n -- ", 1)[0].split())
    assert f"daemon and endpoint together {peak} MB at the peak" in entry  # it said 29 MB
    # the raw reader's idle wake-ups and reaction, quoted under "Reading the trace"
    # (they were an earlier run's, 0.53 and 22.6 / 26.8 ms, and cited none)
    measured = json.loads((REPO / "bench" / "results" / f"{run.group(1)}.json").read_text())
    idle, reaction = measured["idle_raw"], measured["reaction_raw"]
    assert (f"measured {idle['beyond_watchdog_per_s']:.2f} wake-ups/s beyond watchdog pings. "
            f"A new gNB is pushed {reaction['p50_ms']:.1f} ms (p50) / "
            f"{reaction['p99_ms']:.1f} ms (p99)") in said


def test_the_man_page_gives_the_status_of_a_reader_that_left() -> None:
    """`status | head` ends with 128 + SIGPIPE (tests/integration:
    test_a_report_whose_reader_left_ends_quietly): an admin's script meets 141, which EXIT STATUS
    did not list."""
    codes = [e.split("\n", 1)[0] for e in man_section("EXIT STATUS").split(".TP\n.B ")[1:]]
    assert str(128 + signal.SIGPIPE) in codes, codes

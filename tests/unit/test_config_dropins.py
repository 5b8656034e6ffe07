"""The main file and its drop-ins (config.d/*.toml): merged key by key in lexical order,
every value's origin known and printed, every file judged as the main one, and the
Manager's password found where the service gets it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from gtp5g_operator.commands.doctor.config import config_checks
from gtp5g_operator.config import ConfigError, load
from gtp5g_operator.config.load import emptied
from gtp5g_operator.config.render import effective_config
from gtp5g_operator.service.vocabulary import load as load_config
from testbed.harness import REPO, write_config
from testbed.tls import make_ca_and_server_cert


@pytest.fixture
def etc(tmp_path: Path, keys: Dict[str, Path]) -> Path:
    """/etc/gtp5g-operator as the package leaves it: a main file of comments only."""
    root = tmp_path / "etc"
    (root / "config.d").mkdir(parents=True)
    (root / "config.toml").write_text("# the settings are in config.d/*.toml\n")
    (root / "config.d" / "00-key.toml").write_text(
        f'[api]\npublic_key = "{keys["public"]}"\n[trace]\npipe = "{tmp_path / "pipe"}"\n')
    return root


def test_drop_ins_override_key_by_key_in_lexical_order(etc: Path) -> None:
    d = etc / "config.d"
    (d / "50-site.toml").write_text('[api]\nurl = "http://10.0.0.5:8080"\ntimeout = 2.0\n'
                                    "[match]\nuid = [1000]\n")
    (d / "60-override.toml").write_text("[api]\ntimeout = 3.0\n")
    (d / ".hidden.toml").write_text("[api]\ntimeout = 4.0\n")
    (d / "70-old.toml.dpkg-dist").write_text("[api]\ntimeout = 5.5\n")
    (d / "README").write_text("not a drop-in")
    config = load_config(str(etc / "config.toml"))
    assert config.api.url == "http://10.0.0.5:8080"  # from 50, untouched by 60
    assert config.api.timeout == 3.0  # 60 after 50; hidden and other names ignored
    assert config.match.uid == (1000,)
    assert config.files == (str(etc / "config.toml"), str(d / "00-key.toml"),
                            str(d / "50-site.toml"), str(d / "60-override.toml"))
    assert config.origins["api.timeout"] == str(d / "60-override.toml")
    assert config.origins["api.url"] == str(d / "50-site.toml")
    assert "strategy.mode" not in config.origins  # a default


def test_print_names_the_origin_of_every_value(etc: Path) -> None:
    (etc / "config.d" / "50-site.toml").write_text("[strategy]\nclear_on_stop = true\n")
    text = effective_config(load_config(str(etc / "config.toml")))
    assert f"clear_on_stop = true  # {etc}/config.d/50-site.toml" in text
    assert 'mode = "overwrite"  # default' in text
    assert text.count("# ") >= 25  # every key of every section
    out = subprocess.run([sys.executable, "-m", "gtp5g_operator", "check-config", "--print",
                          "--config", str(etc / "config.toml")], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and out.stdout == text


def test_an_error_names_the_drop_in_that_set_the_key(etc: Path) -> None:
    bad = etc / "config.d" / "50-site.toml"
    bad.write_text('[strategy]\nexecution_time_ns = "20ms"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert str(exc.value).startswith(f"{bad}: strategy.execution_time_ns: expected")
    bad.write_text("[stratgy]\nmode = 1\n")
    with pytest.raises(ConfigError, match=f"^{bad}: stratgy: unknown section"):
        load_config(str(etc / "config.toml"))
    bad.write_text("[api\n")
    with pytest.raises(ConfigError, match=f"^{bad}: invalid TOML"):
        load_config(str(etc / "config.toml"))


def test_a_cross_key_rule_names_the_file_of_the_key_it_is_about(etc: Path) -> None:
    (etc / "config.d" / "10-api.toml").write_text("[api]\ntimeout = 20.0\n")
    with pytest.raises(ConfigError, match=f"^{etc}/config.d/10-api.toml: api.timeout: must "
                                          "be shorter than strategy.resync_interval"):
        load_config(str(etc / "config.toml"))


@pytest.mark.parametrize("mode,kind,message", [
    (0o777, "dir", "writable by other users"),
    (0o755, "file", "not a directory"),
])
def test_a_drop_in_directory_others_could_fill_is_refused(tmp_path: Path, keys: Dict[str, Path],
                                                          mode: int, kind: str,
                                                          message: str) -> None:
    main = write_config(tmp_path / "config.toml", api={"public_key": str(keys["public"])})
    target = tmp_path / "config.d"
    if kind == "dir":
        target.mkdir()
    else:
        target.write_text("")
    target.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        load_config(str(main))


def test_a_drop_in_others_can_write_is_refused_like_the_main_file(etc: Path) -> None:
    drop = etc / "config.d" / "50-site.toml"
    drop.write_text("[log]\nlevel = \"debug\"\n")
    drop.chmod(0o666)
    with pytest.raises(ConfigError, match=f"{drop}: writable by other users"):
        load_config(str(etc / "config.toml"))


def test_a_drop_in_linked_from_a_directory_others_could_write_is_refused(
        etc: Path, tmp_path: Path) -> None:
    """The README: the drop-ins and the directories holding them are refused if others
    can write them.  A drop-in linked in (configuration management's checkout) is held
    by its target's directory: its owner may rename another file into its place.  Only
    the link's directory (config.d) was judged: a root-owned target passed."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "site.toml").write_text("[match]\nuid = [0]\n")
    link = etc / "config.d" / "50-site.toml"
    link.symlink_to(checkout / "site.toml")
    checkout.chmod(0o777)  # (not a chown to another uid: the package build runs as nobody)
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert str(exc.value) == (f"{link} links to {checkout / 'site.toml'}, whose directory "
                              f"{checkout}: writable by other users (mode 0777); "
                              f"run chmod go-w {checkout}")
    checkout.chmod(0o1777)  # sticky: others may not rename over what they do not own
    assert load_config(str(etc / "config.toml")).match.uid == (0,)


def test_a_link_on_the_way_to_a_drop_in_in_a_directory_others_could_write_is_refused(
        etc: Path, tmp_path: Path) -> None:
    """Linked in through a link of someone else's (config.d/50-site.toml -> their link ->
    root's checkout): only the first link's directory and the last target's were judged,
    and the owner of the link in between may point it at another file or remove it."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "site.toml").write_text("[match]\nuid = [0]\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "site.toml").symlink_to(checkout / "site.toml")
    link = etc / "config.d" / "50-site.toml"
    link.symlink_to(theirs / "site.toml")
    theirs.chmod(0o777)  # (not a chown to another uid: the package build runs as nobody)
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert str(exc.value) == (f"{link} links through {theirs / 'site.toml'}, whose directory "
                              f"{theirs}: writable by other users (mode 0777); "
                              f"run chmod go-w {theirs}")
    theirs.chmod(0o755)
    assert load_config(str(etc / "config.toml")).match.uid == (0,)


def test_a_link_to_a_directory_on_the_way_to_a_drop_in_is_judged_like_a_file_link(
        etc: Path, tmp_path: Path) -> None:
    """config.d/50-site.toml -> theirs/checkout/site.toml, theirs/checkout -> root's
    checkout: the link on the way is a directory's, and its owner may point it at
    another tree as well.  Only the file's own links were followed: it loaded."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "site.toml").write_text("[match]\nuid = [0]\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "checkout").symlink_to(checkout)
    (etc / "config.d" / "50-site.toml").symlink_to(theirs / "checkout" / "site.toml")
    theirs.chmod(0o777)  # (not a chown to another uid: the package build runs as nobody)
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert str(exc.value) == (f"{etc / 'config.d' / '50-site.toml'} links through "
                              f"{theirs / 'checkout'}, whose directory {theirs}: writable by "
                              f"other users (mode 0777); run chmod go-w {theirs}")
    theirs.chmod(0o755)
    assert load_config(str(etc / "config.toml")).match.uid == (0,)


@pytest.mark.parametrize("key", ["public_key", "ca_file", "password_file"])
def test_a_named_file_in_a_directory_others_could_write_is_refused(
        tmp_path: Path, keys: Dict[str, Path], key: str) -> None:
    """The README: the files the configuration names and the directories holding them
    are refused if others can write them (like sshd's StrictModes).  They were judged as
    files only: root's CA file of mode 0644 in a directory another user owns passed
    check-config, and that user could rename a CA of theirs over it (a man in the middle
    then reads the Manager's password) or remove the key or password file (every login
    fails)."""
    named = tmp_path / "named"
    named.mkdir()
    shutil.copy(keys["public"], named / "public_key")
    make_ca_and_server_cert(named)["ca"].rename(named / "ca_file")
    (named / "password_file").write_text("s3cret\n")
    (named / "password_file").chmod(0o600)
    held = tmp_path / "held"
    held.mkdir()
    (named / key).rename(held / key)
    main = write_config(tmp_path / "config.toml", trace={"pipe": str(tmp_path / "pipe")}, api={
        "url": "https://127.0.0.1:9", "username": "op",
        **{k: str((held if k == key else named) / k)
           for k in ("public_key", "ca_file", "password_file")}})

    def refusal() -> str:
        with pytest.raises(ConfigError) as exc:
            load_config(str(main), env={})
        return str(exc.value)

    held.chmod(0o777)
    assert refusal().startswith(f"{held / key}: its directory {held}: writable by other "
                                f"users (mode 0777); run chmod go-w {held}")
    held.chmod(0o1777)  # sticky and ours (/tmp is root's): others may not rename over it
    assert load_config(str(main), env={}).password == "s3cret"
    # a link to it, from a directory others may not write: its target's directory is judged
    (named / key).symlink_to(held / key)
    main.write_text(main.read_text().replace(str(held / key), str(named / key)))
    held.chmod(0o777)
    assert refusal().startswith(f"{named / key} links to {held / key}, whose directory "
                                f"{held}: writable by other users (mode 0777)")
    if os.geteuid() != 0:
        return  # chown to another uid needs root
    for mode in (0o755, 0o1777):  # sticky or not, its owner may rename over any file in it
        held.chmod(mode)
        os.chown(held, 61234, 61234)
        assert refusal().startswith(f"{named / key} links to {held / key}, whose directory "
                                    f"{held}: owned by uid 61234; must be owned by root; "
                                    f"run chown root {held}")


def test_the_password_is_found_where_the_service_gets_it(
        tmp_path: Path, keys: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the unit: $CREDENTIALS_DIRECTORY only.  From a shell (check-config,
    doctor, ExecReload sees the unit's variable): the running unit's credentials,
    then systemd's credential stores — the same password the service is given."""
    main = write_config(tmp_path / "config.toml", api={"flavor": "manager", "username": "op"})
    unit, store = tmp_path / "unit-credentials", tmp_path / "credstore"
    monkeypatch.setattr(load, "UNIT_CREDENTIALS", str(unit))
    monkeypatch.setattr(load, "CREDSTORES", (str(store), str(tmp_path / "run-credstore")))
    with pytest.raises(ConfigError, match=f"no systemd credential gthulhu-password in {unit}, "
                                          f"{store}, .*/etc/credstore/gthulhu-password"):
        load_config(str(main), env={})
    store.mkdir()
    (store / "gthulhu-password").write_text("from-the-store\n")
    (store / "gthulhu-password").chmod(0o600)
    assert load_config(str(main), env={}).password == "from-the-store"
    unit.mkdir()
    (unit / "gthulhu-password").write_text("from-the-running-unit\n")
    (unit / "gthulhu-password").chmod(0o600)
    assert load_config(str(main), env={}).password == "from-the-running-unit"
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "gthulhu-password").write_text("the-units-own\n")
    (inside / "gthulhu-password").chmod(0o600)
    assert load_config(str(main), env={"CREDENTIALS_DIRECTORY": str(inside)}
                       ).password == "the-units-own"
    (store / "gthulhu-password").chmod(0o644)  # the store's file is judged like any other
    (unit / "gthulhu-password").unlink()
    with pytest.raises(ConfigError, match="readable by other users"):
        load_config(str(main), env={})


def test_a_credential_store_the_shell_may_not_search_is_not_called_empty(
        tmp_path: Path, keys: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/credstore is root's 0700: check-config or doctor from an admin's own shell
    cannot see into it.  They said "no systemd credential ...: put the password in
    /etc/credstore/gthulhu-password", a file that is there; they must say they could
    not look."""
    main = write_config(tmp_path / "config.toml", api={"flavor": "manager", "username": "op"})
    store = tmp_path / "credstore"
    store.mkdir()
    (store / "gthulhu-password").write_text("s3cret\n")
    (store / "gthulhu-password").chmod(0o600)
    monkeypatch.setattr(load, "UNIT_CREDENTIALS", str(tmp_path / "unit-credentials"))
    monkeypatch.setattr(load, "CREDSTORES", (str(store),))
    real_lstat = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).startswith(f"{store}/"):  # what search permission denied looks like
            raise PermissionError(13, "Permission denied", str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(ConfigError) as err:
        load_config(str(main), env={})
    message = str(err.value)
    assert f"gthulhu-password cannot be looked for in {store} (permission denied)" in message
    assert "run this as root" in message and "put the password in" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_the_running_units_credential_owned_by_its_dynamic_user_is_accepted(
        tmp_path: Path, keys: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the credentials file system takes no ACL (ramfs: systemd 252 on Debian 12,
    or a kernel before 6.3), systemd chowns each credential to the unit's DynamicUser=
    uid (mode 0400).  check-config and doctor from a root shell read the running unit's
    copy first: it must not be refused for the owner systemd gave it."""
    main = write_config(tmp_path / "config.toml", api={"flavor": "manager", "username": "op"})
    unit = tmp_path / "unit-credentials"
    unit.mkdir()
    monkeypatch.setattr(load, "UNIT_CREDENTIALS", str(unit))
    monkeypatch.setattr(load, "CREDSTORES", (str(tmp_path / "credstore"),))
    cred = unit / "gthulhu-password"
    cred.write_text("s3cret")
    cred.chmod(0o400)
    os.chown(cred, 61234, 61234)  # the unit's dynamic uid, as systemd leaves it on ramfs
    unit.chmod(0o500)  # and its directory: read-only, the dynamic user's (not judged)
    os.chown(unit, 61234, 61234)
    assert load_config(str(main), env={}).password == "s3cret"
    assert config_checks(str(main), env={}).loaded
    # inside the unit ($CREDENTIALS_DIRECTORY, e.g. ExecReload= as another uid) too
    assert load_config(str(main), env={"CREDENTIALS_DIRECTORY": str(unit)}).password == "s3cret"
    # still refused: one others may read, and a password_file an ordinary user owns
    cred.chmod(0o404)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_config(str(main), env={})
    own = tmp_path / "pw"
    own.write_text("s3cret")
    own.chmod(0o600)
    os.chown(own, 61234, 61234)
    main = write_config(tmp_path / "config.toml", api={
        "flavor": "manager", "username": "op", "password_file": str(own)})
    with pytest.raises(ConfigError, match="owned by uid 61234"):
        load_config(str(main), env={})


@pytest.mark.parametrize("drop_in,key", [
    ("[strategy]\nresync_interval = 3.0\n", "api.timeout"),  # api.timeout at its default 5
    ('[api]\nflavor = "manager"\n', "api.username"),  # no user: the flavor asks for one
])
def test_a_cross_key_rule_broken_by_a_drop_in_names_that_drop_in(
        etc: Path, drop_in: str, key: str) -> None:
    """The main file is the package's comments-only file: an error must not send the
    admin there when the drop-in that broke the rule set the other key."""
    site = etc / "config.d" / "50-site.toml"
    site.write_text(drop_in)
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert str(exc.value).startswith(f"{site}: {key}: ")


def test_a_configuration_directory_others_could_empty_is_refused(etc: Path) -> None:
    """Whoever may write the directory holding config.toml may rename config.d away, and
    every drop-in setting (match.uid, ...) would silently fall back to its default."""
    (etc / "config.d" / "50-site.toml").write_text("[match]\nuid = [0]\n")
    etc.chmod(0o777)
    with pytest.raises(ConfigError, match=f"^{etc}/config.toml: its directory {etc}: "
                                          "writable by other users"):
        load_config(str(etc / "config.toml"))
    etc.chmod(0o1777)  # sticky: others may not rename what they do not own
    assert load_config(str(etc / "config.toml")).match.uid == (0,)


def test_an_emptied_main_file_is_rejected_with_advice_that_works_for_it(etc: Path) -> None:
    """A reload rejects a file caught empty that set keys (a save under way).  Its way out
    said "remove the file", which the main file cannot be (load refuses a missing one):
    an admin who moved config.toml's settings into config.d/ and emptied it had every
    reload rejected, whichever of the two it followed, until a restart."""
    main = etc / "config.toml"
    main.write_text('[api]\nurl = "http://10.0.0.5:8080"\n')
    old = load_config(str(main))
    (etc / "config.d" / "50-site.toml").write_text('[api]\nurl = "http://10.0.0.5:8080"\n')
    main.write_text("")
    said = emptied(old)
    assert said.startswith(f"{main} is empty now, and set api.url before"), said
    main.unlink()  # what "remove the file" asked
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(str(main))
    main.write_text("# the settings are in config.d/*.toml\n")  # what the message says
    assert "comment" in said and emptied(old) == ""
    assert load_config(str(main)).api.url == "http://10.0.0.5:8080"


@pytest.mark.parametrize("content,password", [
    ("s3cret", "s3cret"), ("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"),
    ("s3cret\n\n", "s3cret"),  # trailing empty lines, as before
    ("s3cret\nold-one\n", None), ("# the Manager's\ns3cret\n", None), ("s3\rcret", None),
    ("\n", ""), ("", ""),
])
def test_a_password_file_of_several_lines_is_refused(tmp_path: Path, content: str,
                                                     password: str | None) -> None:
    """The file was taken whole: a newline inside became part of the password, and the
    Manager's refusal said nothing of why."""
    pw = tmp_path / "pw"
    pw.write_text(content, newline="")
    pw.chmod(0o600)
    main = write_config(tmp_path / "config.toml", api={
        "flavor": "manager", "username": "op", "password_file": str(pw)})
    if password:
        assert load_config(str(main), env={}).password == password
        return
    with pytest.raises(ConfigError) as err:  # "" empty, None more than one line
        load_config(str(main), env={})
    assert str(err.value) == (f"{pw}: api.password_file: " + (
        "the password file is empty" if password == "" else
        "more than one line (the password must be the file's only line)"))


def test_a_password_file_that_starts_with_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    """check-config said ok, and the daemon sent the invisible mark with the password: the
    Manager's "invalid password" pointed at a file that looked right."""
    pw = tmp_path / "pw"
    pw.write_bytes(b"\xef\xbb\xbfs3cret\r\n")
    pw.chmod(0o600)
    main = write_config(tmp_path / "config.toml", api={
        "flavor": "manager", "username": "op", "password_file": str(pw)})
    with pytest.raises(ConfigError) as err:
        load_config(str(main), env={})
    assert str(err.value) == (f"{pw}: api.password_file: the file starts with a byte order "
                              "mark (bytes EF BB BF), which would be sent as part of the "
                              "password: save it as UTF-8 without a BOM")


@pytest.mark.parametrize("key,what", [("ca_file", "CA file"), ("password_file", "password")])
def test_a_missing_ca_or_password_file_names_its_key(tmp_path: Path, keys: Dict[str, Path],
                                                    key: str, what: str) -> None:
    """The error named the path only, where the key file's names api.public_key: the
    admin had to guess which setting pointed there."""
    missing = tmp_path / "missing"
    main = write_config(tmp_path / "config.toml", api={
        "flavor": "manager", "username": "op", "password_file": str(tmp_path / "pw"),
        key: str(missing)})
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    with pytest.raises(ConfigError) as err:
        load_config(str(main), env={})
    assert str(err.value) == (f"{missing}: cannot read {what} (api.{key}): "
                              "No such file or directory")


def test_a_deleted_conffile_says_how_dpkg_gives_it_back(
        etc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.toml is the package's conffile: deleted (a cleanup of /etc/gtp5g-operator,
    configuration management purging what it does not manage), the service stops with
    exit 78, and `apt install --reinstall` does not bring it back (dpkg keeps a deleted
    conffile deleted); the error said only "No such file or directory"."""
    record = tmp_path / "gtp5g-operator.conffiles"
    record.write_text(f"{etc / 'config.toml'}\n")
    monkeypatch.setattr(load, "DPKG_CONFFILES", str(record))
    (etc / "config.toml").unlink()
    with pytest.raises(ConfigError, match="No such file or directory") as exc:
        load_config(str(etc / "config.toml"))
    assert "--force-confmiss gtp5g-operator" in str(exc.value)
    # a file the package does not ship (another --config) gets no such advice
    record.write_text("/etc/gtp5g-operator/config.toml\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(etc / "config.toml"))
    assert "dpkg" not in str(exc.value) and "apt-get" not in str(exc.value)

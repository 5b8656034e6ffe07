"""The match.uid warning at start names a file the admin should edit: never the
packaged main file, which README.Debian and the conffile say to leave alone."""

import dataclasses

from gtp5g_operator.config.schema import Config, MatchConfig
from gtp5g_operator.service.daemon import uid_warning

MAIN = "/etc/gtp5g-operator/config.toml"


def test_unset_points_at_a_drop_in() -> None:
    text = uid_warning(Config(source=MAIN), MAIN)
    assert text.startswith("match.uid is empty: any local user can name a process nr-gnb")
    assert text.endswith("/etc/gtp5g-operator/config.d/50-site.toml")
    assert f"match.uid in {MAIN}" not in text


def test_set_to_empty_names_that_file() -> None:
    site = "/etc/gtp5g-operator/config.d/10-fleet.toml"
    cfg = dataclasses.replace(Config(source=MAIN), match=MatchConfig(exe=("/usr/bin/nr-gnb",)),
                              origins={"match.uid": site})
    text = uid_warning(cfg, MAIN)
    assert "match.exe alone does not pin the gNB" in text
    assert text.endswith(f"match.uid in {site}")

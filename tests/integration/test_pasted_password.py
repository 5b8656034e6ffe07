"""A password pasted into api.username by mistake (the README: errors never show
api.username's value for that reason) is refused by the Manager, and must then
appear neither in the journal nor in state.json, which every local user can
read (mode 0644 in /run/gtp5g-operator) and `status --json` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from testbed.harness import wait_until
from tests.conftest import Env
from tests.integration.test_flavors import PASSWORD, manager_for, start_manager


def test_a_password_pasted_into_api_username_is_not_published(
        env: Env, keys: Dict[str, Path]) -> None:
    manager = manager_for(keys)
    state = env.tmp / "run" / "state.json"
    try:
        d = start_manager(env, manager, api={"username": PASSWORD})
        d.wait_log("the Manager refused the login")
        # the refusal published: state.json is written after the failed push
        text = wait_until(lambda: state.exists() and "refused the login" in state.read_text()
                          and state.read_text(), what="the refusal in state.json")
        assert PASSWORD not in text
        assert PASSWORD not in d.log()
        assert d.stop() == 0
    finally:
        manager.stop()

"""Scope templates and the newer scopes (per group member, per run): keys, and refusals at
config load and per event (fail closed, never one shared placeholder sandbox). No containers."""

from __future__ import annotations

import pytest

from callboard.actors.config_file import ConfigError, parse_fleet
from callboard.sandbox.config import SandboxPolicy
from callboard.sandbox.policy import ScopeError, scope_key

FLEET = """name: t
bots:
  - id: demo
    adapter: {{type: web}}
    sandbox: {{enabled: true, {policy}}}
"""


def test_group_user_scope_splits_a_group_by_member() -> None:
    policy = SandboxPolicy(scope="group_user")
    alice = scope_key(policy, "b", "group", "g1", "alice")
    assert alice != scope_key(policy, "b", "group", "g1", "bob")
    assert alice != scope_key(policy, "b", "group", "g2", "alice")
    assert scope_key(policy, "b", "private", "c1", "alice") == scope_key(
        SandboxPolicy(), "b", "private", "c1", "x"
    )
    with pytest.raises(ScopeError, match="no user"):
        scope_key(policy, "b", "group", "g1", None)


def test_run_scope_is_one_sandbox_per_run() -> None:
    policy = SandboxPolicy(scope="run")
    one = scope_key(policy, "b", "group", "g1", "alice", run="r1")
    assert one == scope_key(policy, "b", "group", "g1", "bob", run="r1")
    assert one != scope_key(policy, "b", "group", "g1", "alice", run="r2")
    with pytest.raises(ScopeError, match="per run"):
        scope_key(policy, "b", "group", "g1", "alice")


def test_template_keys_come_from_event_fields_and_fail_closed() -> None:
    policy = SandboxPolicy(scope="template", scope_template="{chat_type}/{user_id}")
    assert scope_key(policy, "b", "group", "g1", "alice") == scope_key(policy, "b", "group", "g2", "alice")
    assert scope_key(policy, "b", "group", "g1", "alice") != scope_key(policy, "b", "group", "g1", "bob")
    assert scope_key(policy, "b", "group", "g1", "a/b") != scope_key(policy, "b", "group/a", "g1", "b")
    with pytest.raises(ScopeError, match=r"needs \{user_id\}"):
        scope_key(policy, "b", "group", "g1", None)  # never a shared '..._unknown' sandbox
    threaded = SandboxPolicy(scope="template", scope_template="{chat_id}:{thread}")
    assert scope_key(threaded, "b", "group", "g1", None) != scope_key(
        threaded, "b", "group", "g1", None, "t1"
    )


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ("scope: template, scope_template: '{chat_id}/{sender_name}'", "unknown field {sender_name}"),
        ("scope: template", "needs scope_template"),
        ("scope: template, scope_template: 'everyone'", "names no field"),
        ("scope: template, scope_template: '{chat_id'", "scope_template:"),
        ("scope: user, scope_template: '{chat_id}'", "only with scope: template"),
    ],
)
def test_a_bad_template_is_refused_at_config_load(policy: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fleet(FLEET.format(policy=policy), "f.yaml")
    text = str(caught.value)
    assert "f.yaml:" in text and "sandbox" in text and reason in text, text


def test_a_good_template_loads() -> None:
    config = parse_fleet(
        FLEET.format(policy="scope: template, scope_template: '{chat_id}-{user_id}'"), "f.yaml"
    )
    assert config.bots[0].sandbox.scope_template == "{chat_id}-{user_id}"

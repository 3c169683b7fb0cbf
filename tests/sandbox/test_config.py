"""Config models: defaults, units, and clear errors that name the field (no containers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from callboard.sandbox.config import SandboxPolicy, SandboxProfile, SandboxSettings, parse_size
from callboard.sandbox.engine import EngineEndpoint, redact, resolve_endpoint

pytestmark = pytest.mark.timeout(60)


def error_text(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(excinfo.value)


def test_defaults_are_hardened_and_bounded() -> None:
    settings = SandboxSettings()
    profile = settings.profile("default")
    assert profile.network is False
    assert profile.user == "1000:1000"
    assert profile.mounts == []
    assert settings.allowed_mount_roots == []
    assert settings.idle_ttl == 600
    assert settings.max_sessions >= 1
    policy = SandboxPolicy()
    assert policy.enabled is False
    assert policy.scope == "session"
    assert set(policy.tools) == {"exec", "read", "write", "edit", "glob", "grep"}


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 << 20),
        ("1g", 1 << 30),
        ("64KiB", 64 << 10),
        ("2MB", 2 << 20),
        (4096, 4096),
        ("1.5k", 1536),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "-1m", "12q", True, None])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SandboxSettings.model_validate({"profiles": {"small": {"memory": "lots"}}})
    assert "profiles.small.memory" in error_text(excinfo)
    assert "invalid size" in error_text(excinfo)
    with pytest.raises(ValidationError) as excinfo:
        SandboxSettings.model_validate({"idle_ttl": "soon"})
    assert "idle_ttl" in error_text(excinfo)
    with pytest.raises(ValidationError) as excinfo:
        SandboxSettings.model_validate({"max_sesions": 3})
    assert "max_sesions" in error_text(excinfo)  # typos are errors, not silently ignored


def test_durations_and_sizes_parse_in_profiles() -> None:
    profile = SandboxProfile.model_validate(
        {"memory": "256m", "exec_timeout": "1m", "max_exec_timeout": "5m"}
    )
    assert profile.memory == 256 << 20
    assert profile.exec_timeout == 60
    with pytest.raises(ValidationError, match="exec_timeout must not exceed max_exec_timeout"):
        SandboxProfile(exec_timeout=600, max_exec_timeout=60)


@pytest.mark.parametrize("user", ["0", "0:0", "root", "1000:abc", "", "65534"])
def test_root_or_symbolic_users_are_refused(user: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SandboxProfile(user=user)
    assert "user" in error_text(excinfo)


def test_default_profile_always_exists_and_unknown_profiles_are_named() -> None:
    settings = SandboxSettings.model_validate({"profiles": {"big": {"memory": "1g"}}})
    assert set(settings.profiles) == {"default", "big"}
    with pytest.raises(ValueError, match="'huge' is not defined \\(defined: big, default\\)"):
        SandboxPolicy(profile="huge").check_profile(settings)


def test_engine_url_and_api_version_are_checked() -> None:
    with pytest.raises(ValidationError, match="engine_url must start with"):
        SandboxSettings(engine_url="/var/run/docker.sock")
    with pytest.raises(ValidationError, match="api_version"):
        SandboxSettings(api_version="latest")


def test_policy_tools_are_names_from_the_list() -> None:
    with pytest.raises(ValidationError) as excinfo:
        SandboxPolicy.model_validate({"tools": ["exec", "rm"]})
    assert "tools.1" in error_text(excinfo)
    assert SandboxPolicy(tools=["read", "read", "grep"]).tools == ["read", "grep"]


def test_json_schema_has_descriptions_and_accepts_size_strings() -> None:
    schema = SandboxSettings.model_json_schema()
    assert "description" in schema["properties"]["max_sessions"]
    policy = SandboxPolicy.model_json_schema()
    assert "description" in policy["properties"]["scope"]
    memory = SandboxProfile.model_json_schema()["properties"]["memory"]
    assert {"type": "integer", "minimum": 0} in memory["anyOf"]
    pattern = next(item["pattern"] for item in memory["anyOf"] if item["type"] == "string")
    assert re.match(pattern, "512m") and re.match(pattern, "1GiB") and not re.match(pattern, "lots")


def test_engine_resolution_order(tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    socket.touch()
    explicit = SandboxSettings(engine_url="unix:///srv/podman.sock")
    assert resolve_endpoint(explicit, {"DOCKER_HOST": "tcp://x:2375"}) == EngineEndpoint(
        "unix:///srv/podman.sock", "sandbox.engine_url"
    )
    from_env = resolve_endpoint(SandboxSettings(), {"DOCKER_HOST": "tcp://u:secret@x:2375"}, [])
    assert from_env is not None and from_env.url is None and from_env.source == "DOCKER_HOST"
    assert "secret" not in from_env.display
    found = resolve_endpoint(SandboxSettings(), {}, [str(socket)])
    assert found is not None and found.unix_socket == str(socket)
    assert resolve_endpoint(SandboxSettings(), {}, [str(tmp_path / "absent.sock")]) is None
    assert resolve_endpoint(SandboxSettings(enabled=False, engine_url="unix:///x"), {}, []) is None


def test_redact_hides_credentials() -> None:
    assert redact("tcp://admin:hunter2@10.0.0.1:2376") == "tcp://***@10.0.0.1:2376"
    assert redact("unix:///run/podman/podman.sock") == "unix:///run/podman/podman.sock"


def test_settings_are_immutable_for_sharing_across_threads() -> None:
    settings = SandboxSettings()
    with pytest.raises(ValidationError):
        settings.max_sessions = 5  # type: ignore[misc]

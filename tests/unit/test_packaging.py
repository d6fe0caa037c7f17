"""The installed package layout: flows/ and blocks/ inside clearlake's namespace."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_installed_and_under_the_clearlake_namespace() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = config["package-dir"]
    folders = {".".join(init.parent.relative_to(ROOT).parts)
               for top in ("clearlake", "flows", "blocks")
               for init in (ROOT / top).rglob("__init__.py")}
    installed = {mapped.get(name, name.replace(".", "/")).replace("/", ".")
                 for name in config["packages"]}
    assert installed == folders
    assert all(name == "clearlake" or name.startswith("clearlake.")
               for name in config["packages"])


def test_flows_and_blocks_import_by_their_installed_names() -> None:
    import clearlake.blocks
    import clearlake.flows

    assert Path(clearlake.flows.__file__).parent == ROOT / "flows"
    assert Path(clearlake.blocks.__file__).parent == ROOT / "blocks"
    assert {"DaskCluster", "LakeFSCredentials", "LakeFSRepository"} <= set(clearlake.blocks.__all__)

"""`clearlake --help` imports Typer, not the libraries the commands use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("rich", "numpy", "cv2", "scipy", "sklearn", "PIL", "prefect", "lakefs_sdk", "pyarrow",
         "pydantic", "boto3", "dask", "distributed", "httpx", "starlette", "yaml")


def test_registering_the_commands_imports_no_library_they_use() -> None:
    # A fresh interpreter: this test process has imported all of them already.
    probe = (
        "import json, sys; import clearlake.cli; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == [], (
        "a module in clearlake.cli.COMMAND_MODULES imports these at its top; import them "
        "inside the command instead (see clearlake/cli/app.py)")


def test_help_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "clearlake.cli", "--help"],
                          capture_output=True, text=True, check=True)
    for command in ("score", "train", "evaluate", "classify", "lineage", "import", "stack",
                    "gate", "init-repo", "merge", "demo"):
        assert f"\n  {command} " in done.stdout, command

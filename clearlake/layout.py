"""Where clearlake keeps what it writes in a repository, and the version of that layout.

On each processed branch, under `_clearlake/` (and nowhere else):

    _clearlake/records/<image path>.json   one signed record per image (`record_path`)
    _clearlake/tables/<branch>/part*.parquet  the branch's records as one table, in parts
                                           (`table_folder`, `clearlake.table`)
    _clearlake/model/model.json            a model trained into the branch
    _clearlake/model/scores.json           its held-out scores
    _clearlake/policy.yaml                 the quality gate's policy (written by people)
    _clearlake/config.yaml                 the metric scripts pinned (written by people)

lakeFS's own `_lakefs_actions/` holds the hooks `init-repo` installs. Neither folder
is ever an input, and an import never writes into them.

Results commits record `RESULTS_LAYOUT`. Layouts:

1. records as JSON; the table kept each record as JSON in a `record` column.
2. the table in flat columns, its layout in the Parquet schema's metadata, in one
   object, `_clearlake/tables/<branch>.parquet` (`legacy_table_path`).
3. the table in parts of at most `clearlake.table.PART_ROWS` rows, each image's row in
   the part its path hashes to, so a run rewrites only the parts it changes.

A reader meets older layouts and reads them (a branch's next run rewrites its table
in the current layout); a newer one than it knows is refused by `check_layout`, which
says to upgrade clearlake.
"""

from __future__ import annotations

import hashlib
import itertools
import urllib.parse

from clearlake.errors import ConfigurationError

RESULTS_LAYOUT = 3
RESULTS_ROOT = "_clearlake/"
ACTIONS_ROOT = "_lakefs_actions/"
RECORDS_PREFIX = f"{RESULTS_ROOT}records/"
# lakeFS refuses longer keys (v1.84.0: pkg/catalog/validate.go MaxPathLength, in bytes).
LAKEFS_MAX_KEY_BYTES = 1024
HASHED_RECORDS_PREFIX = f"{RECORDS_PREFIX}%23sha256/"  # records of paths too long to spell
TABLES_PREFIX = f"{RESULTS_ROOT}tables/"
MODEL_PATH = f"{RESULTS_ROOT}model/model.json"
SCORES_PATH = f"{RESULTS_ROOT}model/scores.json"
POLICY_PATH = f"{RESULTS_ROOT}policy.yaml"
CONFIG_PATH = f"{RESULTS_ROOT}config.yaml"
# Folders that are never images to classify, and that an import never writes into.
NEVER_INPUTS = (RESULTS_ROOT, ACTIONS_ROOT)


def check_layout(version: int, where: str) -> None:
    """Refuse results written in a layout newer than this clearlake reads.

    Raises:
        ConfigurationError: `version` is newer than `RESULTS_LAYOUT`.
    """
    if version > RESULTS_LAYOUT:
        raise ConfigurationError(
            f"{where} was written by a newer clearlake (results layout {version}; this one "
            f"reads up to {RESULTS_LAYOUT}): upgrade clearlake to read it")


def _percent(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))


def _unsafe_in_key(char: str) -> bool:
    """`%` (so the encoding reverses), `\\` (a Windows separator) and control characters."""
    code = ord(char)
    return char in "%\\" or code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


def record_path(image_path: str) -> str:
    """Where the record of `image_path` lives: `_clearlake/records/<encoded path>.json`.

    lakeFS keys are flat strings, but `lakectl fs download`, `lakectl local` or an S3
    sync write them to a disk, where `..` or a drive would leave `_clearlake/records/`.
    So the path is percent-encoded (UTF-8, upper-case hex) wherever it could lead out:
    `%` itself (so the encoding reverses), `\\`, control characters, a `:` second in a
    segment (`C:` is a drive to Windows, `1:` to Python's ntpath), a `/` that would
    leave an empty segment (leading, trailing, doubled), and segments of only dots and
    spaces (`.`, `..`, and what Windows trims to them). `image_path_of` reverses it.
    A path whose key would exceed lakeFS's 1,024 bytes has its record at
    `_clearlake/records/%23sha256/<SHA-256 of the path>.json` (its `path` field names it).

    Every other path keeps the key it had before keys were encoded, so the records
    already stored for them are found as before. A path with one of those characters
    or segments has a new key: a record written before stays under the old key, unread;
    `lineage` finds none until the image changes and a run writes one, and the gate
    takes its metrics from the metrics store instead.
    """
    parts = []
    for segment in image_path.split("/"):
        if segment and not segment.strip(". "):
            parts.append(_percent(segment))
            continue
        encoded = "".join(_percent(c) if _unsafe_in_key(c) else c for c in segment)
        if encoded[1:2] == ":":
            encoded = f"{encoded[0]}%3A{encoded[2:]}"
        parts.append(encoded)
    key = parts[0]
    for before, part in itertools.pairwise(parts):
        key += ("/" if before and part else "%2F") + part
    key = f"{RECORDS_PREFIX}{key}.json"
    if len(key.encode()) > LAKEFS_MAX_KEY_BYTES:
        # lakeFS refuses the key, and a run that cannot write a record fails, run after
        # run. Such a path's record is named by its SHA-256 instead, in a folder no
        # encoded path can name (`%` is always encoded, `#` never: `%23` cannot occur).
        return f"{HASHED_RECORDS_PREFIX}{hashlib.sha256(image_path.encode()).hexdigest()}.json"
    return key


def image_path_of(record_key: str) -> str:
    """The image path whose record lives at `record_key`: the inverse of `record_path`.

    Raises:
        ValueError: `record_key` is not a key `record_path` makes, or is the hashed key of
            a path too long to spell out (read the record's `path`).
    """
    if record_key.startswith(HASHED_RECORDS_PREFIX):
        raise ValueError(f"the record key {record_key!r} names its image by SHA-256: "
                         "read the record's 'path'")
    if not (record_key.startswith(RECORDS_PREFIX) and record_key.endswith(".json")):
        raise ValueError(f"not a record key: {record_key!r}")
    path = urllib.parse.unquote(record_key[len(RECORDS_PREFIX):-len(".json")], errors="strict")
    if record_path(path) != record_key:  # one key per path: refuse other spellings
        raise ValueError(f"not a record key: {record_key!r}")
    return path


def table_folder(branch: str) -> str:
    """The folder of the parts of `branch`'s table (lakeFS branch names hold no `/`)."""
    return f"{TABLES_PREFIX}{branch}/"


def legacy_table_path(branch: str) -> str:
    """Where layout 1 and 2 kept the table of `branch`, in one object."""
    return f"{TABLES_PREFIX}{branch}.parquet"

"""The results layout's version: recorded, and a newer one refused. No servers needed."""

from __future__ import annotations

import pytest

from clearlake.errors import ConfigurationError
from clearlake.table import table_records


def test_results_in_a_newer_layout_are_refused_with_what_to_do() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clearlake.layout import RESULTS_LAYOUT
    from clearlake.provenance import ResultsMarker

    key = b"k" * 32
    marker = ResultsMarker("r", "main", "c" * 64, "", "run", "m", "packaged", "v", "0.1")
    assert ResultsMarker.from_metadata(marker.to_metadata(key), key).layout == RESULTS_LAYOUT
    older = {k: v for k, v in marker.to_metadata(key).items() if k != "clearlake.layout"}
    assert ResultsMarker.from_metadata(older, key).layout == 1  # from before it was recorded

    table = pa.table({"path": ["a.jpg"]}).replace_schema_metadata(
        {b"clearlake": b'{"layout": 99, "metrics": {}, "classes": {}, "json_fields": []}'})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    with pytest.raises(ConfigurationError, match=r"results layout 99.*upgrade clearlake"):
        table_records(sink.getvalue().to_pybytes())

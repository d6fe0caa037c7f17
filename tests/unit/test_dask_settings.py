"""The Dask settings the stack's scheduler and workers start with, as Dask reads them."""

from __future__ import annotations

import dask
import pytest

from clearlake.config import DASK_QUIET_CONFIG, dask_quiet_environment, dask_quiet_settings


def test_the_quiet_settings_reach_dask_through_the_environment() -> None:
    read = dask.config.collect_env(dask_quiet_environment())
    assert {key: dask.config.get(key, config=read) for key in DASK_QUIET_CONFIG} == {
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
        "distributed.worker.profile.enabled": False,
        "distributed.worker.memory.monitor-interval": "500ms",
    }


def test_a_users_own_dask_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    assert "distributed.worker.profile.enabled" not in dask_quiet_settings()
    assert "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED" not in dask_quiet_environment()
    assert "distributed.admin.tick.interval" in dask_quiet_settings()

"""The stack's Prefect automations: flow runs whose process died are marked Crashed.

A flow run killed together with the worker that launched it (SIGKILL to the worker,
the OOM killer, a machine lost) is reported by nobody: Prefect's open-source server
keeps it Running forever, and `reconcile` keeps the temporary branch of a run that
still looks live. Prefect's answer (docs: "detect zombie flows") is two halves, both
set up by clearlake:

* every run of clearlake's deployments emits `prefect.flow-run.heartbeat` every
  FLOW_HEARTBEAT_S seconds (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` in the deployments'
  `job_variables.env` in `prefect.yaml`, so they beat on any worker that runs them);
* two automations mark a run Crashed when neither a heartbeat nor a final state comes
  within ZOMBIE_AFTER_S: one after any heartbeat (the run died mid-way), one after a
  deployment run of clearlake's entered Running (it died before its first heartbeat
  reached the server). The second matches only runs tagged `clearlake`, which beat by
  their deployment: a run that never beats by design is never crashed by it.

A Crashed run is final, so `reconcile` may then delete its temporary branch and covers
its commit. The window allows several missed beats: a live run on a machine loaded far
beyond its cores still beats well within it.

    python -m clearlake.stack.automations     # with PREFECT_API_URL set: create or update
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

FLOW_HEARTBEAT_S = 30  # Prefect's minimum
ZOMBIE_AFTER_S = 5 * FLOW_HEARTBEAT_S
HEARTBEAT_SETTING = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
DEPLOYMENT_TAG = "clearlake"  # every deployment in prefect.yaml carries it
ZOMBIE_AUTOMATION = "clearlake: crash flow runs that stopped beating"
UNSTARTED_AUTOMATION = "clearlake: crash deployment runs that never beat"
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed")


def _crash_when_silent(name: str, description: str, after: set[str],
                       related: dict[str, str] | None = None) -> Any:
    """An automation that marks a flow run Crashed when, after one of `after`, neither a
    heartbeat nor a final state of it follows within ZOMBIE_AFTER_S."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=name,
        description=description,
        trigger=EventTrigger(
            after=after,
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(related or {}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {ZOMBIE_AFTER_S} s: its process is gone"),
        ],
    )


def zombie_automation() -> Any:
    """Crashes any flow run whose heartbeats stopped."""
    return _crash_when_silent(
        ZOMBIE_AUTOMATION,
        "Flow runs whose heartbeats stopped (their process is gone) end Crashed, so "
        "reconcile can clean up after them.",
        after={"prefect.flow-run.heartbeat"})


def unstarted_automation() -> Any:
    """Crashes a run of clearlake's deployments that entered Running but never beat."""
    return _crash_when_silent(
        UNSTARTED_AUTOMATION,
        "Runs of clearlake's deployments beat from their start; one that entered Running "
        "and never beat was killed before its first heartbeat reached the server.",
        after={"prefect.flow-run.Running"},
        related={"prefect.resource.role": "tag",
                 "prefect.resource.id": f"prefect.tag.{DEPLOYMENT_TAG}"})


def ensure_automations() -> list[str]:
    """Create the automations on the Prefect server of PREFECT_API_URL, or bring existing
    ones of the same names up to date; return their ids. Idempotent."""
    from prefect.automations import Automation

    ids = []
    for wanted in (zombie_automation(), unstarted_automation()):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:  # Prefect's "Automation with name … not found"
            ids.append(str(wanted.create().id))
            continue
        wanted.id = existing.id
        wanted.update()
        ids.append(str(existing.id))
    return ids


if __name__ == "__main__":
    print(" ".join(ensure_automations()))

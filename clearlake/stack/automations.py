"""The stack's Prefect automations: flow runs whose process died are marked Crashed.

A flow run killed together with the worker that launched it (SIGKILL to the worker,
the OOM killer, a machine lost) is reported by nobody: Prefect's open-source server
keeps it Running forever, and `reconcile` keeps the temporary branch of a run that
still looks live. Prefect's answer (docs: "detect zombie flows") is two halves, both
set up by the stack:

* every flow run emits `prefect.flow-run.heartbeat` every FLOW_HEARTBEAT_S seconds
  (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` in the worker's environment, which its runs
  inherit through the forkserver);
* this automation marks a run Crashed when, after a heartbeat, neither another
  heartbeat nor a final state comes within ZOMBIE_AFTER_S.

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
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(FLOW_HEARTBEAT_S)}
ZOMBIE_AUTOMATION = "clearlake: crash flow runs that stopped beating"
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed")


def zombie_automation() -> Any:
    """The automation that marks flow runs Crashed once their heartbeats stop."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="Flow runs whose heartbeats stopped (their process is gone) end "
                    "Crashed, so reconcile can clean up after them.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
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


def ensure_zombie_automation() -> str:
    """Create the automation on the Prefect server of PREFECT_API_URL, or bring an existing
    one of the same name up to date; return its id. Idempotent."""
    from prefect.automations import Automation

    wanted = zombie_automation()
    try:
        existing = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:  # Prefect's "Automation with name … not found"
        return str(wanted.create().id)
    wanted.id = existing.id
    wanted.update()
    return str(existing.id)


if __name__ == "__main__":
    print(ensure_zombie_automation())

"""The reliability suite's stack waits longer for its services to answer their health
checks: on a shared 2-core machine under load (average 14–21), the Prefect server was
seen to take more than the stack's 120 s to start, which failed the session before any
test ran. Restarts in the fault scenarios wait as long."""

from clearlake.stack import services

services.HEALTH_TIMEOUT_S = max(services.HEALTH_TIMEOUT_S, 600.0)

"""Failure categories that are the platform's fault, not the tenant's.

A job that fails because the platform lost it (its worker died, the runner crashed, the cluster
lost it or forgot it) gives the tenant nothing, so it does not use the tenant's monthly quota
(`training.pricing.jobs_counted_this_month`). Failures caused by the tenant's data or request
(bad data, bad configuration, NaN loss, out of memory for the chosen settings, a trainer crash)
still count.
"""

LOST_WORKER = "lost_worker"      # the worker running the trainer died (reconciler)
RUNNER_ERROR = "runner_error"    # the runner itself crashed or hit the queue's timeout
CLUSTER_FAULT = "cluster_fault"  # the cluster lost the job too often, or forgot it

PLATFORM_FAULT_CATEGORIES = frozenset({LOST_WORKER, RUNNER_ERROR, CLUSTER_FAULT})

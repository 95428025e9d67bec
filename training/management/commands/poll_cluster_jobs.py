"""Poll the Slurm cluster's jobs: one `training_job_advance` step for every submitted, unfinished
job with backend "slurm" (states, live loss curve, resubmission on TIMEOUT, fetch on completion).

    python manage.py poll_cluster_jobs                  # one round (cron, CI, a test)
    python manage.py poll_cluster_jobs --loop           # every SLURM_POLL_INTERVAL_SECONDS
    python manage.py poll_cluster_jobs --loop --interval 10

No RQ worker waits on a cluster job: a round takes one short SSH session per job. The same
round is RQ-schedulable as `training.services.slurm_jobs_poll`.
"""

from __future__ import annotations

import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.services import slurm_jobs_poll


class Command(BaseCommand):
    help = "Advance every running Slurm training job by one poll step (--loop to keep polling)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep polling until stopped")
        parser.add_argument("--interval", type=float, default=None,
                            help="seconds between rounds (default SLURM_POLL_INTERVAL_SECONDS)")
        parser.add_argument("--max-rounds", type=int, default=None,
                            help="stop after this many rounds (with --loop)")

    def handle(self, *args, loop=False, interval=None, max_rounds=None, **options):
        interval = interval if interval is not None else float(
            getattr(settings, "SLURM_POLL_INTERVAL_SECONDS", 30))
        if interval <= 0:
            raise CommandError("--interval must be positive")
        stopping = {"now": False}

        def _stop(signum, frame):  # finish the round in progress, then exit
            stopping["now"] = True

        if loop:
            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
        rounds = 0
        while True:
            summary = slurm_jobs_poll()
            rounds += 1
            if summary["polled"] or not loop:
                self.stdout.write(f"polled {summary['polled']} cluster job(s), "
                                  f"{summary['errors']} error(s)")
            if not loop or stopping["now"] or (max_rounds and rounds >= max_rounds):
                return
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not stopping["now"]:
                time.sleep(min(0.5, interval))
            if stopping["now"]:
                return

"""Fail jobs whose worker died, re-enqueue jobs whose queue entry was lost, start due automatic
training. `--loop` repeats every TRAINING_HEARTBEAT_SECONDS (run it next to the workers)."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from training.services import training_auto_check_all, training_jobs_reconcile


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep running")
        parser.add_argument("--interval", type=float, default=None,
                            help="seconds between passes with --loop")
        parser.add_argument("--stale-after", type=float, default=None,
                            help="seconds without heartbeat before a job counts as lost")

    def handle(self, *args, loop=False, interval=None, stale_after=None, **options):
        interval = interval or float(settings.TRAINING_HEARTBEAT_SECONDS)
        while True:
            summary = training_jobs_reconcile(stale_after_seconds=stale_after)
            summary["auto_started"] = training_auto_check_all()
            if any(summary.values()) or not loop:
                self.stdout.write(" ".join(f"{k}={len(v)}" for k, v in summary.items())
                                  + "".join(f"\n  {k}: {', '.join(v)}"
                                            for k, v in summary.items() if v))
            if not loop:
                return
            time.sleep(interval)

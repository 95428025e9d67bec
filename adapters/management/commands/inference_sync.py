"""Bring the multi-LoRA inference server (INFERENCE_SERVER_URL) in step with the versions:
register every ready version of its base as <tenant>-v<N>, unload archived ones it still holds.

    python manage.py inference_sync

Run it after the server restarts (vLLM forgets adapters loaded at run time); without it, the
first chat request for each version registers that version itself.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from adapters.inference_server import inference_server_configured
from adapters.model_refs import ModelUnavailableError
from adapters.services.inference import inference_server_sync


class Command(BaseCommand):
    help = "Register every ready adapter version on the inference server (INFERENCE_SERVER_URL)."

    def handle(self, *args, **options):
        if not inference_server_configured():
            raise CommandError("INFERENCE_SERVER_URL is not set: there is no server to sync.")
        try:
            done = inference_server_sync()
        except ModelUnavailableError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(done, indent=1))

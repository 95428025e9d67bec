"""One streamed reply of the serving runtime: generation runs in a thread, the caller iterates
text pieces; the reply is complete (and can be logged) whether or not the caller keeps reading."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from adapters.model_refs import Completion, LoadedBase, ModelUnavailableError, finish_reason

logger = logging.getLogger(__name__)


class CompletionStream:
    """One streamed reply: iterate for text pieces (end-of-turn markers and the leading and
    trailing whitespace left out, so that the pieces join into exactly `completion().text`)."""

    def __init__(self, *, loaded: LoadedBase, streamer, inputs: dict, kwargs: dict,
                 max_new_tokens: int, adapter_name: str | None):
        self._loaded = loaded
        self._streamer = streamer
        self._inputs = inputs
        self._kwargs = kwargs
        self._max_new_tokens = max_new_tokens
        self._adapter_name = adapter_name
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._output = None
        self._error: BaseException | None = None
        self._pieces: list[str] = []
        self._pending = ""  # whitespace held back until more text follows
        self._ended = False  # an end-of-turn marker was met in the text

    def _run(self, context, lock: threading.Lock) -> None:
        import torch

        try:
            with context, torch.no_grad():
                self._output = self._loaded.model.generate(**self._inputs, **self._kwargs,
                                                           streamer=self._streamer)
        except BaseException as exc:  # noqa: BLE001 - reported to the reader, not lost
            self._error = exc
            logger.exception("streamed generation failed")
            self._streamer.on_finalized_text("", stream_end=True)
        finally:
            lock.release()

    def _clean(self, piece: str) -> str:
        """The part of `piece` to hand out now (see the class docstring)."""
        if self._ended:
            return ""
        emitted = "".join(self._pieces)
        text = self._pending + piece
        for marker in self._loaded.end_strings:
            combined = emitted + text
            if marker and marker in combined:  # a marker the tokenizer does not treat as special
                kept = combined.split(marker, 1)[0]
                text = kept[len(emitted):] if len(kept) > len(emitted) else ""
                self._ended = True
        if not self._pieces:
            text = text.lstrip()
        core = text.rstrip()
        self._pending = text[len(core):]
        if core:
            self._pieces.append(core)
        return core

    def __iter__(self) -> Iterator[str]:
        for piece in self._streamer:
            cleaned = self._clean(piece)
            if cleaned:
                yield cleaned
        if self._error is not None:
            raise ModelUnavailableError(f"Generation failed: {self._error}") from self._error

    def completion(self) -> Completion:
        """Wait for the generation to end; the whole reply (what the pieces joined to, plus the
        rest when the reader stopped early)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise ModelUnavailableError(f"Generation failed: {self._error}") from self._error
        from training.trainer.generation import reply_clean, stop_token_ids

        new_tokens = self._output[0, self._inputs["input_ids"].shape[1]:]
        text = reply_clean(self._loaded.tokenizer.decode(new_tokens, skip_special_tokens=True),
                           self._loaded.end_strings)
        return Completion(
            text=text, prompt_tokens=int(self._inputs["input_ids"].shape[1]),
            completion_tokens=int(new_tokens.shape[0]),
            finish_reason=finish_reason(new_tokens, stop_token_ids(self._kwargs),
                                        self._max_new_tokens),
            adapter_name=self._adapter_name, seconds=time.monotonic() - self._started)

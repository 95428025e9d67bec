"""The one reader of the trainer's events.jsonl (training.trainer.events): complete lines only,
from an offset, from a file or from a chunk a remote reader fetched; the last terminal event."""

from __future__ import annotations

from training.trainer.events import (
    EventWriter,
    last_terminal_event,
    read_events,
    read_events_from,
)


def test_it_returns_complete_lines_only_and_resumes_at_the_torn_one(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("started")
    writer.emit("step", step=1, loss=2.5)
    with open(path, "ab") as handle:
        handle.write(b'{"type": "step", "st')  # the trainer is still writing this line
    events, offset = read_events_from(path)
    assert [e["type"] for e in events] == ["started", "step"]
    assert offset == path.read_bytes().index(b'{"type": "step", "st')

    with open(path, "ab") as handle:
        handle.write(b'ep": 2}\nnot json\n')
    more, end = read_events_from(path, offset)
    assert more[0] == {"type": "step", "step": 2}
    assert more[1]["type"] == "unreadable" and more[1]["raw"] == "not json"
    assert end == path.stat().st_size
    assert read_events_from(path, end) == ([], end)
    assert read_events_from(tmp_path / "missing.jsonl", 7) == ([], 7)
    # The trainer-side reader skips what it cannot read.
    assert [e["type"] for e in read_events(path)] == ["started", "step", "step"]


def test_a_chunk_is_read_as_the_bytes_at_its_offset():
    chunk = b'{"type": "eval", "step": 4}\n{"type": "completed"}\n{"type": "st'
    events, offset = read_events_from(chunk, 100)
    assert [e["type"] for e in events] == ["eval", "completed"]
    assert offset == 100 + chunk.rindex(b"\n") + 1
    assert read_events_from(b'{"type": "step"', 5) == ([], 5)


def test_the_last_terminal_event_is_the_latest_completed_or_failed_one():
    assert last_terminal_event([{"type": "started"}, {"type": "step"}]) is None
    events = [{"type": "failed", "reason": "first"}, {"type": "step"},
              {"type": "completed", "n": 1}, {"type": "unreadable"}]
    assert last_terminal_event(events) == {"type": "completed", "n": 1}

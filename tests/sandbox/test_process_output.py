"""A managed process's stdout ring (``ProcessOutput``): bounded by bytes, the oldest dropped
and counted, only the current incarnation's output taken, a waiting reader woken once. The
real process agent feeding it fast is in ``test_process_output_real.py``."""

from __future__ import annotations

from callboard.actors import sandbox_process
from callboard.actors.sandbox_process import ProcessOutput


def test_the_oldest_bytes_are_dropped_and_counted() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    limit = sandbox_process.UNATTACHED_BUFFER
    for index in range(10):
        output.stdout("p.1", bytes([65 + index]) * (limit // 4))
    assert output.buffered == limit
    assert output.dropped == 10 * (limit // 4) - limit
    data = output.take(lambda: None)
    assert len(data) == limit and data.startswith(b"G") and data.endswith(b"J")  # the newest four
    assert output.buffered == 0


def test_a_partial_chunk_is_cut_at_the_exact_limit() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    limit = sandbox_process.UNATTACHED_BUFFER
    output.stdout("p.1", b"a" * (limit - 10))
    output.stdout("p.1", b"b" * 30)
    assert output.buffered == limit and output.dropped == 20
    assert output.take(lambda: None) == b"a" * (limit - 30) + b"b" * 30


def test_an_attacher_may_fall_further_behind_and_its_backlog_is_trimmed_when_it_leaves() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    output.attached(True)
    output.stdout("p.1", b"x" * (2 * sandbox_process.UNATTACHED_BUFFER))
    assert output.dropped == 0
    output.attached(False)
    assert output.buffered == sandbox_process.UNATTACHED_BUFFER
    assert output.dropped == output.dropped_at_detach + sandbox_process.UNATTACHED_BUFFER


def test_only_the_current_incarnation_is_taken() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    output.stdout("p.1", b"old")
    output.begin("p.2")  # restarted: what the first left unread is dropped, counted
    output.stdout("p.1", b"late")
    output.stderr("p.1", b"late")
    output.stdout("p.2", b"new")
    assert output.take(lambda: None) == b"new" and output.dropped == 3
    assert output.stderr_text() == ""


def test_a_waiting_reader_is_woken_once() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    woken: list[int] = []
    assert output.take(lambda: woken.append(1)) == b""
    output.stdout("p.1", b"a")
    output.stdout("p.1", b"b")
    assert woken == [1]
    assert output.take(lambda: woken.append(2)) == b"ab" and woken == [1]


def test_the_stderr_tail_is_bounded() -> None:
    output = ProcessOutput()
    output.begin("p.1")
    for _ in range(100):
        output.stderr("p.1", b"e" * 100)
    assert len(output.stderr_text()) == sandbox_process.STDERR_PREVIEW

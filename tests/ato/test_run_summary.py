"""The closing summary scores a run against the generator's ground truth."""

from ato.runner import RunResult
from sinks.progress import RunStats


def test_an_intervention_at_another_deadline_than_the_truths_is_no_hit() -> None:
    """An id names the stall (client, journey, instance start, step, attempt), not when it
    fell due: an engine that missed an abandon signal raises the right id at the wrong
    deadline, and scored by ids alone it reached precision 1.0 (524 of 1,338 deadlines
    wrong in a probe)."""
    truth = {"a": 100, "b": 200, "c": 300}
    written = {"a": 100, "b": 250, "x": 400}  # b late, x not a true stall, c missed
    result = RunResult(RunStats(), 1.0, "out", written, truth)
    summary = result.summary()
    assert summary["deadline_mismatches"] == 1
    assert summary["precision"] == round(1 / 3, 6) and summary["recall"] == round(1 / 3, 6)
    exact = RunResult(RunStats(), 1.0, "out", truth, truth)
    assert exact.summary()["precision"] == exact.summary()["recall"] == 1.0

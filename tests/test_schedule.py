"""The log schedule as a pure function, against hand-enumerated step lists."""

from __future__ import annotations

import pytest

from actlab.engine import cadence as schedule


def measured(calls):
    return [s.step for c in calls for s in c.slots]


def total_updates(calls):
    return sum(c.steps_done for c in calls)


def test_steps_not_a_multiple_of_log_every():
    calls = schedule.plan(23, 5, {})
    assert measured(calls) == [0, 5, 10, 15, 20, 23]
    assert [s.n_plain for c in calls for s in c.slots] == [4, 4, 4, 4, 2, 0]
    assert [s.apply for c in calls for s in c.slots] == [True] * 5 + [False]
    assert total_updates(calls) == 23  # every step applied exactly once


def test_eval_not_dividing_log_every_runs_on_the_next_log_step():
    # log steps 0, 10, ..., 50 and 55; eval every 15: due at 15 -> 20, 30, 45 -> 50, and the ends
    calls = schedule.plan(55, 10, {"eval": 15, "hessian": 0})
    on = {s.step: s.on for c in calls for s in c.slots}
    assert [t for t, o in on.items() if o["eval"]] == [0, 20, 30, 50, 55]
    assert [t for t, o in on.items() if o["hessian"]] == [0, 55]  # 0: start and end only


def test_several_log_steps_per_call_keep_the_same_slots():
    one = schedule.plan(103, 10, {"eval": 25}, per_call=1)
    four = schedule.plan(103, 10, {"eval": 25}, per_call=4)
    assert [len(c.slots) for c in four] == [4, 4, 4]  # 0, 10, ..., 100 and 103
    assert [s for c in four for s in c.slots] == [s for c in one for s in c.slots]
    assert total_updates(four) == 103


def test_checkpoints_start_a_call_and_the_end_is_saved():
    calls = schedule.plan(100, 10, {}, checkpoint_every=30, per_call=4)
    starts = [c.slots[0].step for c in calls if c.checkpoint]
    assert starts == [30, 60, 90, 100]  # saved before these steps' measurements
    assert not calls[0].checkpoint  # nothing to save before the first step
    assert measured(calls) == list(range(0, 101, 10))
    assert all(len(c.slots) <= 4 for c in calls)


def test_checkpoint_interval_not_dividing_log_every():
    calls = schedule.plan(50, 20, {}, checkpoint_every=15)  # log steps 0, 20, 40, 50
    assert [c.slots[0].step for c in calls if c.checkpoint] == [20, 40, 50]


def test_resume_mid_run_continues_the_same_plan():
    full = schedule.plan(70, 10, {"eval": 25}, checkpoint_every=20, per_call=2)
    resumed = schedule.plan(70, 10, {"eval": 25}, checkpoint_every=20, per_call=2, start=40)
    tail = [s for c in full for s in c.slots if s.step >= 40]
    assert [s for c in resumed for s in c.slots] == tail
    assert not resumed[0].checkpoint  # the checkpoint it resumed from is not saved again
    assert [c.slots[0].step for c in resumed if c.checkpoint] == [60, 70]
    assert total_updates(resumed) == 30


def test_log_every_larger_than_steps():
    calls = schedule.plan(7, 50, {"eval": 0})
    assert measured(calls) == [0, 7]
    assert calls[0].slots[0].n_plain == 6


@pytest.mark.parametrize(("log_every", "expected"), [(1, 16), (10, 10), (50, 2), (500, 1)])
def test_auto_per_call(log_every, expected):
    assert schedule.auto_per_call(log_every) == expected


def test_every_throttles_by_seconds():
    now = [0.0]
    every = schedule.Every(1.0, clock=lambda: now[0])
    fired = []
    for t in (0.0, 0.4, 0.99, 1.0, 1.5, 2.2):
        now[0] = t
        fired.append(every())
    assert fired == [True, False, False, True, False, True]

"""The log schedule as a pure function, against hand-enumerated step lists; the plain-step
loops of compile-time trip counts that one program per run runs every slot's plain steps in."""

from __future__ import annotations

import itertools

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


def covered(calls, sizes):
    """Each step the calls apply an update at, in order, as the program runs them: the
    measured step, then its plain steps loop after loop of `sizes` (cadence.split)."""
    out = []
    for c in calls:
        for s in c.slots:
            out += [s.step] * s.apply
            at = s.step + 1
            for size, on in zip(sizes, schedule.split(s.n_plain, sizes), strict=True):
                if on:
                    out += range(at, at + size)
                    at += size
    return out


@pytest.mark.parametrize(("steps", "log_every", "task_length", "per_call", "ckpt"),
                         list(itertools.product((1, 20, 23, 60), (1, 5, 7), (0, 10, 12),
                                                (1, 3, 16), (0, 15))))
def test_every_step_is_applied_once_and_every_log_step_measured(steps, log_every,
                                                                task_length, per_call, ckpt):
    full = schedule.plan(steps, log_every, {"eval": 10}, ckpt, per_call,
                         task_length=task_length)
    sizes = schedule.loops(s.n_plain for c in full for s in c.slots)
    logs = schedule.log_steps(steps, log_every, task_length)
    for start in {None, *[c.slots[0].step for c in full if c.checkpoint]}:
        calls = schedule.plan(steps, log_every, {"eval": 10}, ckpt, per_call, start,
                              task_length=task_length)
        first = start or 0
        assert covered(calls, sizes) == list(range(first, steps))  # once each, in order
        assert measured(calls) == [t for t in logs if t >= first]
        assert calls[-1].slots[-1].step == steps and not calls[-1].slots[-1].apply
        assert schedule.program_slots(calls) <= schedule.program_slots(full) <= per_call
        if task_length:  # a slot's plain steps are all of its task
            assert all((s.step + s.n_plain) // task_length == s.step // task_length
                       for c in calls for s in c.slots)


def test_a_short_run_is_one_call_of_one_loop():
    calls = schedule.plan(20, 5, {"eval": 10}, per_call=schedule.auto_per_call(5))
    assert [[s.n_plain for s in c.slots] for c in calls] == [[4, 4, 4, 4, 0]]
    assert schedule.loops(s.n_plain for s in calls[0].slots) == (4,)
    assert schedule.program_slots(calls) == 5


@pytest.mark.parametrize(("steps", "log_every", "task_length", "sizes"), [
    (2000, 50, 0, (49,)),  # the defaults: one loop of log_every - 1
    (5000, 50, 500, (49,)),  # tasks starting on log steps
    (2023, 50, 0, (49, 22)),  # the remainder: a loop of its own
    (60, 1, 0, ()),  # no plain steps at all: no loop
    (30, 7, 10, (6, 4, 2, 1)),  # tasks off the log grid, counts 6 3 5 2 1: 6 and binary digits
    (6000, 50, 120, (49, 39, 29, 19, 9)),  # counts fewer than their binary digits: their own
])
def test_plain_steps_run_in_few_loops_of_known_trip_counts(steps, log_every, task_length,
                                                           sizes):
    calls = schedule.plan(steps, log_every, {"eval": 250}, 0,
                          schedule.auto_per_call(log_every), task_length=task_length)
    assert schedule.loops(s.n_plain for c in calls for s in c.slots) == sizes
    assert covered(calls, sizes) == list(range(steps))


def test_split_picks_a_count_s_own_loop_or_its_binary_digits():
    assert schedule.split(0, (6, 4, 2, 1)) == (False,) * 4
    assert schedule.split(6, (6, 4, 2, 1)) == (True, False, False, False)
    assert schedule.split(5, (6, 4, 2, 1)) == (False, True, False, True)
    assert schedule.split(22, (49, 22)) == (False, True)
    with pytest.raises(ValueError, match="not made of the loops"):
        schedule.split(3, (49, 22))

"""The compiled program is shaped for accelerators, read from its HLO.

The plain steps between log steps run in a while loop whose trip count XLA knows (its
known_trip_count, or a condition comparing the counter with a constant) and whose body
holds no conditional: on a GPU a loop of unknown trip count reads its predicate back to
the host every iteration, and so may each conditional. The plain loop is found by what it
does, not by its name: the innermost while loop that multiplies matrices (the training
step; the slots' loop around it also does, the random-number loops inside do not). A
short run compiles one program.
"""

from __future__ import annotations

import dataclasses
import re
import types

import jax
import pytest

from actlab.engine import cadence, experiment, loop
from actlab.runs import driver
from conftest import make_config

HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+)\b.*\{$")
CALLS = re.compile(r"\b(?:calls|to_apply|condition|body|true_computation|false_computation)"
                   r"=%?([\w.\-]+)")
BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
WHILE = re.compile(r"\swhile\(.*\bcondition=%?([\w.\-]+), body=%?([\w.\-]+)")
KNOWN = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
CONSTANT = re.compile(r"\bs32\[\] constant\((\d+)\)")


@dataclasses.dataclass
class Loop:
    trip: int | None  # None: not known when compiled
    reach: set[str]  # the computations its body runs, transitively


def computations(text: str) -> dict[str, list[str]]:
    """HLO text (optimized or not) as computation name -> its instruction lines."""
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        m = HEADER.match(line) if not line.startswith((" ", "}", "HloModule")) else None
        if m:
            name = m.group(1)
            out[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            out[name].append(line)
    return out


def called(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        names.update(CALLS.findall(line))
        for group in BRANCHES.findall(line):
            names.update(n.strip().lstrip("%") for n in group.split(","))
    return names


def reach(comps: dict[str, list[str]], root: str) -> set[str]:
    seen, todo = set(), [root]
    while todo:
        c = todo.pop()
        if c not in seen:
            seen.add(c)
            todo += [n for n in called(comps.get(c, [])) if n in comps]
    return seen


def loops(text: str) -> list[Loop]:
    comps = computations(text)
    out = []
    for lines in comps.values():
        for line in lines:
            m = WHILE.search(line)
            if not m:
                continue
            known = KNOWN.search(line)
            cond = comps[m.group(1)]
            bound = [int(c) for ln in cond for c in CONSTANT.findall(ln)]
            compares = any(" compare(" in ln for ln in cond)
            trip = (int(known.group(1)) if known else
                    bound[0] if compares and len(bound) == 1 else None)
            out.append(Loop(trip, reach(comps, m.group(2))))
    return out


def has(comps: dict[str, list[str]], names: set[str], op: str) -> bool:
    return any(f" {op}(" in line for n in names for line in comps[n])


def plain_loops(text: str) -> list[Loop]:
    """The innermost while loops whose body multiplies matrices."""
    comps = computations(text)
    with_dots = [lp for lp in loops(text) if has(comps, lp.reach, "dot")]
    return [lp for lp in with_dots
            if not any(o is not lp and o.reach < lp.reach for o in with_dots)]


def conditional_in(text: str, lp: Loop) -> bool:
    return has(computations(text), lp.reach, "conditional")


def compiling(monkeypatch) -> list:
    """Every program the driver compiles, as it compiles them."""
    compiled = []
    make = loop.make_program

    def making(*a, **kw):
        program = make(*a, **kw)

        def lower(*la, **lk):
            lowered = program.lower(*la, **lk)

            def compile_():
                compiled.append(lowered.compile())
                return compiled[-1]
            return types.SimpleNamespace(compile=compile_)
        return types.SimpleNamespace(lower=lower)

    monkeypatch.setattr(loop, "make_program", making)
    return compiled


def test_a_short_run_compiles_one_program_whose_plain_steps_loop_a_known_count(
        tmp_path, monkeypatch):
    """20 steps logged every 5: one call [4, 4, 4, 4, final], one program; its plain loop
    runs 4 steps, known when compiled, with no conditional inside; the slots' loop around
    it runs the call's 5 slots; the measurements come back as one array (one transfer)."""
    compiled = compiling(monkeypatch)
    driver.run(make_config(), tmp_path)
    assert len(compiled) == 1
    assert len(jax.tree.leaves(compiled[0].out_info[1])) == 1
    text = compiled[0].as_text()
    plain = plain_loops(text)
    assert [lp.trip for lp in plain] == [4]
    assert not conditional_in(text, plain[0])
    around = [lp for lp in loops(text) if plain[0].reach < lp.reach]
    assert [lp.trip for lp in around] == [5]


def lowered(cfg, steps: int) -> str:
    """The unoptimized HLO of the program the driver makes for `steps` steps logged every 5
    (lowered, not compiled: each loop's condition compares its counter with the bound)."""
    exp = experiment.build(cfg)
    calls = cadence.plan(steps, 5, {"eval": 10}, per_call=16)
    k, names = cadence.program_slots(calls), loop.measurement_names(exp)
    program = loop.make_program(exp, k, loops=cadence.loops(s.n_plain for c in calls
                                                            for s in c.slots),
                                plain_interventions=loop.interventions_in_plain(exp, calls))
    low = program.lower(experiment.initial_state(exp), experiment.device_data(exp),
                        loop.plan_arrays(calls[0], k, names))
    return low.compiler_ir("hlo").as_hlo_text()


@pytest.mark.parametrize(("plasticity", "steps", "trips", "inside"), [
    ({}, 23, [4, 2], False),  # 4 plain steps a slot, the remainder 2 in a loop of its own
    ({"method": "redo", "every": 10}, 20, [4], False),  # every ReDo on a log step
    ({"method": "redo", "every": 7}, 20, [4], True),  # ReDo between log steps: its lax.cond
])
def test_plain_loops_of_a_remainder_and_of_a_periodic_intervention(plasticity, steps, trips,
                                                                   inside):
    """Each set of plain steps runs in its own loop of known trip count; a periodic
    intervention is traced into them (a conditional) only when one falls between log
    steps."""
    text = lowered(make_config(plasticity=plasticity), steps)
    plain = plain_loops(text)
    assert sorted(lp.trip for lp in plain) == sorted(trips)
    assert [conditional_in(text, lp) for lp in plain] == [inside] * len(trips)

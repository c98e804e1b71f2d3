"""scripts/plan_upcasts.py: entry-computation temporaries of a dumped step, by opcode and dtype."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("plan_upcasts", REPO / "scripts" / "plan_upcasts.py")
plan_upcasts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan_upcasts)

HLO = """HloModule jit_guarded_train_step

%body (p: (f32[4])) -> (f32[4]) {
  %inner.1 = f32[4]{0} convert(bf16[4]{0} %x)
}

ENTRY %main (w: bf16[8,8]) -> f32[8,8] {
  %w = bf16[8,8]{1,0} parameter(0)
  %wrapped_convert.3 = f32[8,8]{1,0} fusion(%w), kind=kLoop, calls=%wrapped_convert_computation.3
  %copy.2 = f32[8,8]{1,0} copy(%wrapped_convert.3)
  ROOT %while.1 = f32[8,8]{1,0} while(%copy.2), body=%body
}
"""
ASSIGNMENT = """allocation 0: size 128, parameter 0, shape |bf16[8,8]| at ShapeIndex {}:
 value: <1 w @0> (size=128,offset=0): bf16[8,8]{1,0}
allocation 1: size 4096, preallocated-temp:
 value: <2 wrapped_convert.3 @0> (size=256,offset=0): f32[8,8]{1,0}
 value: <3 copy.2 @0> (size=256,offset=256): f32[8,8]{1,0}
 value: <4 inner.1 @0> (size=16,offset=512): f32[4]{0}
 value: <5 while.1 @0> (size=256,offset=256): f32[8,8]{1,0}
"""


def test_entry_temps_by_opcode_and_dtype() -> None:
    total = plan_upcasts.entry_temps(HLO, ASSIGNMENT)
    # the loop body's convert is not counted; the while shares the copy's slot: counted once
    assert dict(total) == {("fusion:wrapped_convert", "f32"): 256, ("copy", "f32"): 256}


def test_an_assignment_without_temporaries_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="preallocated-temp"):
        plan_upcasts.entry_temps(HLO, ASSIGNMENT.split("allocation 1")[0])

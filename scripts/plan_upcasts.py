"""How much of an ``adcsr plan`` temporary estimate is XLA:CPU's fp32 upcasting of bf16 work.

XLA:CPU runs bf16 convolutions in fp32: it converts their bf16 operands (our bf16 frozen weights,
the bf16 rounding of the trainable ones) to fp32 copies, and moves those converts out of the
``grad_accum`` loop, so the copies stay alive for the whole step. A GPU or TPU runs the bf16
convolutions as they are. This script reads the buffer assignment of one compiled step and sums
the temporaries that the entry computation (outside every loop) defines, by operation kind and
dtype, so that the CPU-only part of a plan's peak can be stated.

Run the plan with an XLA dump, then this script on the dump folder::

    XLA_FLAGS="--xla_dump_to=/tmp/dump24 --xla_dump_hlo_module_re=.*train_step.*" \\
        adcsr plan --config configs/stage2.py:gpu_24gb --fast-compile \\
        --config.data.batch_size=2 --config.grad_accum=2
    python scripts/plan_upcasts.py /tmp/dump24

(Batch 2 as 2 micro-batches keeps the per-device micro-batch of the preset, 1 image, and its
loop body; the entry computation's hoisted copies do not depend on the loop's trip count.)
Measured (``gpu_24gb``, 2026-12-03): entry temporaries 12.29 GiB: bf16 -> fp32 weight converts
6.52 GiB (``wrapped_convert``), fp32 -> bf16 -> fp32 rounds of the trainable weights 1.68 GiB
(``convert_convert_fusion``; on a GPU a bf16 copy, 0.84 GiB), copies 3.51 GiB (gradient
accumulators and loop-carried buffers, on any device).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

GIB = 2**30
_INSTR = re.compile(r"\s*(?:ROOT )?%(\S+) = .*? ([a-z\-]+)\(")
_VALUE = re.compile(r"value: <\d+ (\S+) @\S+> \(size=(\d+),offset=(\d+)\): (\w+)\[")


def entry_instructions(hlo: str) -> dict[str, str]:
    """Instruction name -> opcode (``fusion:<kind>`` for fusions) of the ENTRY computation."""
    start = hlo.index("\nENTRY ")
    body = hlo[start : hlo.index("\n}\n", start)]
    out = {}
    for line in body.splitlines()[1:]:
        m = _INSTR.match(line)
        if m:
            name, op = m.group(1), m.group(2)
            out[name] = f"fusion:{name.split('.')[0]}" if op == "fusion" else op
    return out


def temp_allocation(assignment: str) -> str:
    """The text of the buffer assignment's ``preallocated-temp`` allocation."""
    m = re.search(r"\nallocation \d+: size \d+, preallocated-temp:\n", assignment)
    if m is None:
        raise ValueError("no preallocated-temp allocation in the buffer assignment")
    end = assignment.find("\nallocation ", m.end())
    return assignment[m.end() : end if end >= 0 else None]


def entry_temps(hlo: str, assignment: str) -> collections.Counter:
    """Bytes of temporaries defined in the entry computation, by (opcode, dtype); a buffer
    slot shared by several values counts once."""
    names = entry_instructions(hlo)
    seen: set[tuple[int, int]] = set()
    total: collections.Counter = collections.Counter()
    for m in _VALUE.finditer(temp_allocation(assignment)):
        name, size, offset, dtype = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if name in names and (offset, size) not in seen:
            seen.add((offset, size))
            total[(names[name], dtype)] += size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path, help="the --xla_dump_to folder of one plan")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    hlo_files = sorted(args.dump.glob("*train_step*cpu_after_optimizations.txt"))
    if not hlo_files:
        raise SystemExit(f"{args.dump}: no *train_step*cpu_after_optimizations.txt in the dump")
    hlo_path = hlo_files[-1]
    ba_path = hlo_path.with_name(hlo_path.name.replace(".txt", "-buffer-assignment.txt"))
    if not ba_path.is_file():
        raise SystemExit(f"{ba_path}: missing (XLA writes it beside {hlo_path.name})")
    total = entry_temps(hlo_path.read_text(), ba_path.read_text())
    print(f"{hlo_path.name}: entry-computation temporaries {sum(total.values()) / GIB:.2f} GiB")
    for (op, dtype), size in total.most_common(args.top):
        print(f"  {size / GIB:6.2f} GiB  {op:32s} {dtype}")


if __name__ == "__main__":
    main()

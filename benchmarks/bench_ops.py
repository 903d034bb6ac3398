"""Op microbenchmarks: every implementation side by side, JSON records and a ratio table.

    python benchmarks/bench_ops.py                          # all ops, CPU (and CUDA if present)
    python benchmarks/bench_ops.py --ops gaussian_nll --device cpu --out results/x.json
    python benchmarks/bench_ops.py --quick                  # one small shape per op

Implementations: ``reference-eager`` (the pure-PyTorch definition), ``reference-compile``
(the same under torch.compile), ``native`` (fastmbrl's C++/CUDA kernel), and the peer a user
would otherwise use where one exists (e.g. mbrl-lib's GaussianMLP).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Record, format_table, save, time_fn, time_interleaved  # noqa: E402

# op family -> module in benchmarks/ defining cases(device, quick)
OPS = {
    "gaussian_nll": "cases_gaussian_nll",
    "ensemble_mlp": "cases_ensemble_mlp",
    "rollout": "cases_rollout",
    "vagram_loss": "cases_vagram",
    "value_aware_loss": "cases_value_aware",
    "value_gradients": "cases_value_grad",
    "ensemble_disagreement": "cases_disagreement",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ops", nargs="*", default=list(OPS), choices=list(OPS))
    p.add_argument("--device", nargs="*", default=None, help="cpu and/or cuda (default: all)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="one small shape per op")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--interleave", action="store_true",
                   help="time a case's implementations round-robin (fairer on a loaded machine)")
    args = p.parse_args(argv)

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    records: list[Record] = []
    for op_family in args.ops:
        module = importlib.import_module(OPS[op_family])
        for device in devices:
            for op, shape, impls in module.cases(device, quick=args.quick):
                if args.interleave:
                    timed = time_interleaved(impls, device, args.warmup, args.repeats)
                    for impl, (median, n, fastest) in timed.items():
                        records.append(Record(op, shape, device, impl, median, n,
                                              {"interleaved": True, "min_us": fastest}))
                        print(f"{op:<26} {shape:<34} {device:<6} {impl:<22} {median:12.1f} us",
                              flush=True)
                    continue
                for impl, fn in impls.items():
                    try:
                        median, n = time_fn(fn, device, args.warmup, args.repeats)
                    except Exception as exc:  # a peer that cannot run here is reported, not fatal
                        print(f"skip {op} {shape} {impl}: {type(exc).__name__}: {exc}")
                        continue
                    records.append(Record(op, shape, device, impl, median, n))
                    print(f"{op:<26} {shape:<34} {device:<6} {impl:<22} {median:12.1f} us",
                          flush=True)
    print()
    print(format_table(records))
    if args.out:
        save(records, args.out)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

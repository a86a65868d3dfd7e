#!/usr/bin/env python3
"""The training side of one run, step by step: reward means, reward spread and wall time.

    python3 docs/results/train_steps.py RUN_DIR [--markdown] [--per-row 12]

RUN_DIR holds `metrics.jsonl` (one line per step, as the trainer writes it). Prints, per step, the
mean total reward of the group, the mean of each reward component (`reward/<name>/mean`), whether
the group had no reward spread (GRPO learns nothing from such a group) and the step's wall time;
then the total reward's mean over windows of 4 steps and the run's summed step time. Tables are
cut into blocks of `--per-row` steps so they stay readable. Standard library only.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from heldout_steps import print_table  # noqa: E402  (same folder)

NAMES = {"format": "format", "es": "ES", "es_star": "ES\\*", "em": "EM", "em_star": "EM\\*"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--per-row", type=int, default=12)
    a = ap.parse_args()
    md, per_row = a.markdown, a.per_row
    steps = [json.loads(line) for line in open(f"{a.run_dir}/metrics.jsonl")]
    steps = [s for s in steps if "reward/total/mean" in s]
    if not steps:
        sys.exit(f"{a.run_dir}/metrics.jsonl: no training step with `reward/total/mean` yet")
    # the format reward first, then the others in name order, as the page's tables have them
    parts = sorted((k[len("reward/"):-len("/mean")] for k in steps[0]
                    if k.startswith("reward/") and k.endswith("/mean") and k != "reward/total/mean"),
                   key=lambda p: (p != "format", p))
    total = "reward (" + " + ".join(NAMES.get(p, p) for p in parts) + ")"
    for i in range(0, len(steps), per_row):
        block = steps[i:i + per_row]
        rows = [[total] + [f"{s['reward/total/mean']:+.2f}" for s in block]]
        rows += [[NAMES.get(p, p)] + [f"{s[f'reward/{p}/mean']:+.2f}" for s in block] for p in parts]
        rows.append(["group without reward spread"] + ["yes" if s["groups/zero_variance_frac"] > 0 else "no" for s in block])
        rows.append(["step s"] + [f"{s['time/step_s']:.0f}" for s in block])
        print_table(["step"] + [str(s["step"]) for s in block], rows, md)
        print()
    windows = [steps[j:j + 4] for j in range(0, len(steps) - len(steps) % 4, 4)]
    means = ", ".join(f"{sum(s['reward/total/mean'] for s in w) / 4:+.3f}" for w in windows)
    print(f"total reward, means over 4-step windows: {means}")
    print(f"summed step time: {sum(s['time/step_s'] for s in steps):.0f} s over {len(steps)} steps")


if __name__ == "__main__":
    main()

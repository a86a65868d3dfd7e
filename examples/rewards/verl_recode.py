"""A verl-style reward (`compute_score`, called once per completion): the ReCode format + ES*
reward as one score, with its two parts returned beside it, which the trainer logs as
`reward/<label>/format` and `reward/<label>/es_star`.

    [[reward]]
    python = "examples/rewards/verl_recode.py"
    style = "verl"
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recode_rewards import es_star_reward, format_reward  # noqa: E402


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    fmt = format_reward([solution_str])[0]
    es = es_star_reward([solution_str], [ground_truth])[0]
    return {"score": fmt + es, "format": fmt, "es_star": es}

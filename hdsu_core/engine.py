"""One unlearning run end to end: data + hierarchy -> split -> probes before -> unlearn ->
probes after -> metrics -> DuckDB. Used by the CLI, the worker process and the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from hdsu_core import distributed, efficiency, lora, paths, sharding
from hdsu_core import metrics as M
from hdsu_core.artifacts.receipt import hierarchy_sha256, receipt_sha256
from hdsu_core.artifacts.run_models import materialize, record_run_model
from hdsu_core.attacks import AttackContext, parse_attacks, run_attacks
from hdsu_core.compute import device_label, prepare_device, resolve_compute, set_seed
from hdsu_core.datasets import QAItem, dataset_kind, load_spec
from hdsu_core.demo_model import build_demo_model
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.methods import UnlearnContext, get_method, lora_overrides, schema
from hdsu_core.methods.schema import check_value
from hdsu_core.models import ModelBundle, check_model_files, clone_model, load_model
from hdsu_core.probes import generate, perplexity, score_mcq
from hdsu_core.progress import ProgressFn, no_progress
from hdsu_core.tagging import Split, is_member, make_split, member_items
from hdsu_core.training import DEMO_RECIPE, TRAINING_KEYS, inject_knowledge, training_info
from hdsu_core.weight_hashes import tied_aliases

# Default forget selections for the public benchmarks (issue: MedMCQA Surgery; MHQA Anxiety,
# Depression, Trauma with OCD retained) and for the demo knowledge base; one entry per dataset kind.
DEFAULT_FORGET = {
    "demo": ["anxiety"],
    "medmcqa": ["surgery"],
    "mhqa": ["anxiety", "depression", "trauma"],
    "mhqa_gold": ["anxiety", "depression", "trauma"],
    "mhqa_b": ["anxiety", "depression", "trauma"],
    "generic": [],
}
# Knowledge-injection recipes for real datasets: longer questions need a slightly larger tiny model.
INJECT_RECIPE = {
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "intermediate": 256,
    "vocab": 6000,
    "lr": 3e-3,
    "batch": 32,
    "max_epochs": 40,
    "target_acc": 0.95,
    "seed": 0,
    "holdout_fraction": 0.2,
    "max_len": 64,
    "version": 2,
    "eval_every": 5,
    "time_budget_s": 900,
}


@dataclass
class RunConfig:
    forget: list[str]
    method: str = "hdsu"
    model: str = "demo"  # "demo" or a local HF directory / .gguf file
    dataset: str = "demo"  # "demo" or KIND:PATH
    hierarchy: str | None = None  # JSON path; None = default file (or hierarchy_version)
    hierarchy_version: int | None = None
    seed: int = 0
    holdout_fraction: float = 0.2
    settings: dict = field(default_factory=dict)
    inject: bool = False  # fine-tune a given model on the dataset members first
    n_generations: int = 4
    limit: int | None = None  # use a deterministic sample of N items (quick looks)
    recipe: dict = field(default_factory=dict)  # overrides of the knowledge-injection recipe
    device: str = "auto"  # auto (CUDA GPU when torch sees one, else CPU), cpu, cuda, cuda:N
    dtype: str = "float32"  # weight precision of the run: float32 or bfloat16
    from_run: str | None = None  # start from this earlier run's unlearned model (a chained request)
    keep_model: bool = True  # write the run's sparse delta (the receipt is always kept)
    attacks: list[str] = field(default_factory=list)  # "Is it really gone?" attacks after the run (hdsu_core.attacks)
    processes: int = 1  # > 1: data-parallel over that many processes via torchrun (distributed.py, ranks.py)
    autocast: bool = True  # bfloat16 autocast of the method's forward passes on a CUDA GPU (no-op on the CPU)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, ~30 % slower)
    unlearn_lora_r: int | None = None  # the method trains rank-R LoRA adapters (peft), merged before the probes
    fsdp: bool = False  # with unlearn_lora_r and processes > 1: the frozen base sharded over them (sharding.py)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Over what decides the result: whether the files are kept does not, and an unchained
        run hashes as it did before chains existed."""
        d = self.to_dict()
        d.pop("keep_model")
        if d["from_run"] is None:
            d.pop("from_run")
        if not d["attacks"]:  # a run without attacks hashes as before they existed
            d.pop("attacks")
        d.pop("processes", None)  # one process or several compute the same result
        d.pop("fsdp", None)  # ... and so does a sharded base
        for key, default in (("autocast", True), ("gradient_checkpointing", False), ("unlearn_lora_r", None)):
            if d.get(key) == default:  # hashes as before these options existed
                d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def forget_selection(forget: Sequence[str] | None, dataset: str) -> list[str]:
    """The concepts a run forgets: the given ones, else the default of the dataset's kind."""
    return list(forget or DEFAULT_FORGET.get(dataset_kind(dataset), []))


def load_items(spec: str, limit: int | None = None) -> list[QAItem]:
    """All items of a dataset, or a deterministic sample of ``limit`` items spread over the whole
    file (files are often sorted by subject, so the first N would miss whole subjects)."""
    items = load_spec(spec).items
    if not limit or limit >= len(items):
        return items
    keep = set(sorted((hashlib.sha256(it.id.encode()).hexdigest(), it.id) for it in items)[i][1] for i in range(limit))
    return [it for it in items if it.id in keep]


def load_hierarchy(cfg: RunConfig, store=None) -> Hierarchy:
    if cfg.hierarchy:
        return Hierarchy.load(cfg.hierarchy)
    if cfg.hierarchy_version is not None and store is not None:
        return Hierarchy.from_dict(store.get_hierarchy_version(cfg.hierarchy_version)["hierarchy"])
    return Hierarchy.load(paths.DEFAULT_HIERARCHY)


def prepare_model(
    cfg: RunConfig,
    items: Sequence[QAItem],
    progress: ProgressFn,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ModelBundle:
    """The model the run starts from. The demo model on the demo KB; on any other dataset a tiny
    model knowledge-injected on that dataset's members (cached); or a given model, optionally
    fine-tuned on the members first (``inject``, on ``device``, in float32: bfloat16 weights would
    round small fine-tuning updates away). Returned on the CPU; a given model that is not
    fine-tuned is loaded in ``dtype`` directly (half the host memory for a large model)."""
    kind = dataset_kind(cfg.dataset)
    if (
        cfg.model == "demo"
        and cfg.dataset == "demo"
        and not cfg.limit
        and not cfg.recipe
        and cfg.seed == DEMO_RECIPE["seed"]
        and cfg.holdout_fraction == DEMO_RECIPE["holdout_fraction"]
    ):
        return build_demo_model(progress=progress)
    members = member_items(items, cfg.seed, cfg.holdout_fraction)
    if cfg.model == "demo":
        return inject_knowledge(members, name=f"inject-{kind}", recipe=injection_recipe(cfg), progress=progress)
    if cfg.inject:
        return inject_knowledge(
            members, name="inject-custom", base=cfg.model, recipe=finetune_recipe(cfg), progress=progress, device=device
        )
    return load_model(cfg.model, dtype=dtype)


# Knowledge injection into a given (pre-trained) model: a short, gentle fine-tune.
FINETUNE_RECIPE = {**INJECT_RECIPE, "lr": 5e-5, "max_epochs": 10}


def finetune_recipe(cfg: RunConfig) -> dict:
    """The fine-tune of a given model, with the run's recipe overrides (a small batch and one epoch
    make a CPU test of a pretrained model take seconds)."""
    return {**FINETUNE_RECIPE, **(cfg.recipe or {})}


def injection_recipe(cfg: RunConfig) -> dict:
    kind = dataset_kind(cfg.dataset)
    recipe = dict(DEMO_RECIPE) if kind == "demo" else dict(INJECT_RECIPE)
    recipe.update(cfg.recipe or {})
    recipe.update(seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    return recipe


def calibration_split(
    holdout: Sequence[QAItem], seed: int, losses: dict[str, float] | None = None
) -> tuple[list[QAItem], list[QAItem]]:
    """Half of the non-members calibrate the stopping rule; the other half is kept for the
    membership-inference evaluation so the reported AUC is not measured on what the run tuned on.
    With ``losses`` (the original model's answer loss per holdout item) the halves are matched on
    it: items sorted by loss, each consecutive pair split one to each half by a seeded coin. Both
    halves then start from the same loss distribution, so the calibration AUC the stop rule
    steers by and the evaluation AUC the report gives differ by much less than random halves do."""

    def heads(it: QAItem) -> bool:  # the item's seeded coin
        return is_member(it.id, seed + 7919, 0.5)

    if not losses:
        calib_ids = {it.id for it in holdout if not heads(it)}
    else:
        order = sorted(holdout, key=lambda it: (losses[it.id], it.id))
        calib_ids = set()
        for i in range(0, len(order), 2):
            pair = order[i : i + 2]
            if len(pair) == 2:
                calib_ids.add(pair[0].id if heads(pair[0]) else pair[1].id)
            elif not heads(pair[0]):
                calib_ids.add(pair[0].id)
    return [it for it in holdout if it.id in calib_ids], [it for it in holdout if it.id not in calib_ids]


def holdout_losses(before: dict[str, list[dict]]) -> dict[str, float]:
    """The original model's answer loss per holdout item (from the before probe)."""
    return {r["item_id"]: r["loss"] for r in before["holdout"]}


def probe_max_len(bundle: ModelBundle) -> int:
    """Sequence length the probes and the methods use: the one the model was trained with."""
    return int(bundle.meta.get("recipe", {}).get("max_len", 128))


def probe_all(bundle_model, tok, split: Split, max_len: int) -> dict[str, list[dict]]:
    return {
        "forget": score_mcq(bundle_model, tok, split.forget, max_len=max_len),
        "retain": score_mcq(bundle_model, tok, split.retain, max_len=max_len),
        "holdout": score_mcq(bundle_model, tok, split.holdout, max_len=max_len),
    }


def _rows(res: dict[str, list[dict]], split: Split) -> list[dict]:
    out = []
    for part, rows in res.items():
        for r in rows:
            out.append({**r, "split": part, "concept_id": split.tags[r["item_id"]].concept_id or ""})
    return out


def summarise(before: dict, after: dict, split: Split, eval_ids: set[str]) -> dict[str, float]:
    def acc(res, part):
        return M.accuracy(r["correct"] for r in res[part])

    def scores(res, kind):  # (forget items, evaluation non-members)
        return [r[kind] for r in res["forget"]], [r[kind] for r in res["holdout"] if r["item_id"] in eval_ids]

    def auc(res, kind):
        mem, non = scores(res, kind)
        return M.mia_auc_loss(mem, non) if kind == "loss" else M.mia_auc_mink(mem, non)

    hf_ids = {it.id for it in split.holdout_forget}
    out = {
        "forget_acc_before": acc(before, "forget"),
        "forget_acc_after": acc(after, "forget"),
        "retain_acc_before": acc(before, "retain"),
        "retain_acc_after": acc(after, "retain"),
        "holdout_acc_before": acc(before, "holdout"),
        "holdout_acc_after": acc(after, "holdout"),
        "holdout_forget_acc_before": M.accuracy(r["correct"] for r in before["holdout"] if r["item_id"] in hf_ids),
        "holdout_forget_acc_after": M.accuracy(r["correct"] for r in after["holdout"] if r["item_id"] in hf_ids),
        "mia_auc_before": auc(before, "loss"),
        "mia_auc": auc(after, "loss"),
        "mia_auc_mink_before": auc(before, "mink"),
        "mia_auc_mink": auc(after, "mink"),
        "n_forget": len(split.forget),
        "n_retain": len(split.retain),
        "n_holdout": len(split.holdout),
    }
    out["forgetting_rate"] = M.forgetting_rate(out["forget_acc_after"])
    out["knowledge_preservation"] = out["retain_acc_after"]
    out["retain_change_points"] = 100 * (out["retain_acc_after"] - out["retain_acc_before"])
    out["mia_resistance"] = M.mia_resistance(out["mia_auc"])
    out["mia_auc_ci_low"], out["mia_auc_ci_high"] = M.mia_auc_loss_ci(*scores(after, "loss"))
    return out


def check_settings(method: str, settings: dict) -> None:
    """Refuse unknown method names and setting keys (a typo would otherwise be silently ignored
    and the run would use the default), and values of the wrong type or out of their range
    (each method's ``schema``, see methods/schema.py): one line naming the key, the value and
    what is allowed."""
    m = get_method(method)
    known = m.defaults
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(
            f"unknown setting(s) for method {method!r}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    for key, value in settings.items():
        check_value(method, key, value, m.schema[key])


# Fewest items a run can measure on: the retained items (what the run must preserve) and the
# holdout (never trained on: half calibrates the stop rule, half measures membership inference).
MIN_RETAIN = 10
MIN_HOLDOUT = 10


MAX_PROCESSES = 64


def check_run_options(cfg: RunConfig) -> None:
    """The options of a run besides the method settings: the same one-line refusals."""
    for key, value, spec in (
        ("seed", cfg.seed, schema.count(0)),
        ("holdout_fraction", cfg.holdout_fraction, schema.Setting(float, 0, 1, low_open=True, high_open=True)),
        ("n_generations", cfg.n_generations, schema.count(0)),
        ("limit", cfg.limit, schema.count(1)),
        ("processes", cfg.processes, schema.Setting(int, 1, MAX_PROCESSES)),
        ("unlearn_lora_r", cfg.unlearn_lora_r, schema.count(1)),
    ):
        if value is None and key in ("limit", "unlearn_lora_r"):
            continue
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"{key}={value!r} refused: {problem}; {key} must be {spec.allowed()}")
    if cfg.processes > 1 and torch.cuda.is_available() and resolve_compute(cfg.device, cfg.dtype)[0].type == "cuda":
        if cfg.processes > torch.cuda.device_count():
            raise ValueError(
                f"processes={cfg.processes} refused: one GPU per process, torch sees {torch.cuda.device_count()}"
            )
    if cfg.fsdp:
        check_sharded_options(cfg)
    unknown = sorted(set(cfg.recipe or {}) - set(INJECT_RECIPE) - set(DEMO_RECIPE) - set(TRAINING_KEYS))
    if unknown:
        known = ", ".join(sorted([*INJECT_RECIPE, *TRAINING_KEYS]))
        raise ValueError(f"unknown injection recipe key(s) {', '.join(unknown)}; known: {known}")
    check_training_options(cfg)
    if not isinstance(cfg.forget, list) or not all(isinstance(c, str) for c in cfg.forget):
        raise ValueError(f"forget must be a list of concept ids, not {cfg.forget!r}")


def check_sharded_options(cfg: RunConfig) -> None:
    """A sharded base (``fsdp``) is frozen under LoRA adapters and spread over several processes;
    what needs the whole model in one process (the attacks) is refused up front."""
    if not cfg.unlearn_lora_r:
        raise ValueError("fsdp refused without LoRA unlearning: the sharded base is frozen; add --lora R")
    if cfg.processes < 2:
        raise ValueError(f"fsdp refused with processes={cfg.processes}: sharding needs at least 2 processes")
    if cfg.attacks:
        raise ValueError("fsdp refused with attacks: they need the whole model in one process; run without --fsdp")


# The LoRA / DP-SGD options of the injection (recipe keys, --inject-lora / --inject-dp-*).
TRAINING_SCHEMA = {
    "lora_r": schema.count(1),
    "dp_epsilon": schema.POSITIVE,
    "dp_delta": schema.Setting(float, 0, 1, low_open=True, high_open=True),
    "dp_clip": schema.POSITIVE,
}


def check_training_options(cfg: RunConfig) -> None:
    """LoRA rank and DP budget: in range, DP only with LoRA, and only where HDSU injects."""
    recipe = cfg.recipe or {}
    for key, spec in TRAINING_SCHEMA.items():
        problem = spec.problem(recipe[key]) if key in recipe else None
        if problem:
            raise ValueError(f"{key}={recipe[key]!r} refused: {problem}; {key} must be {spec.allowed()}")
    given = [k for k in TRAINING_KEYS if k in recipe]
    if not given:
        return
    if cfg.from_run or (cfg.model != "demo" and not cfg.inject):
        raise ValueError(
            f"{', '.join(given)} refused: they shape the knowledge injection; use --inject (not --from-run)"
        )
    if "lora_r" not in recipe and any(k.startswith("dp_") for k in given):
        raise ValueError(
            "DP-SGD injection needs LoRA (--inject-lora R): opacus cannot train every weight of this model"
        )
    if "dp_epsilon" not in recipe and any(k.startswith("dp_") for k in given):
        raise ValueError("dp_delta / dp_clip refused without dp_epsilon (--inject-dp-epsilon EPS)")


def check_selection(cfg: RunConfig, store=None) -> Split:
    """The run's split, refused when it cannot be measured: nothing to forget, nothing (or too
    little) left to retain, a holdout too small for the membership-inference test. Raises
    ``ValueError`` (or the dataset's / hierarchy's own error) with one line."""
    items = load_items(cfg.dataset, cfg.limit)
    forget = forget_selection(cfg.forget, cfg.dataset)
    split = make_split(items, load_hierarchy(cfg, store), forget, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    where = f"in {cfg.dataset}" + (f" (limit {cfg.limit})" if cfg.limit else "")
    if not split.forget:
        raise ValueError(f"the selection {', '.join(forget)} matches no trained-on items {where}: nothing to forget")
    if not split.retain:
        raise ValueError(
            f"the selection {', '.join(forget)} covers every trained-on item {where} ({len(split.forget)}): "
            f"nothing is left to retain; leave at least {MIN_RETAIN} items outside the selection"
        )
    if len(split.retain) < MIN_RETAIN:
        raise ValueError(
            f"only {len(split.retain)} trained-on item(s) are left to retain {where}: at least {MIN_RETAIN} "
            f"are needed to measure what the run preserves"
        )
    if len(split.holdout) < MIN_HOLDOUT:
        raise ValueError(
            f"the holdout (never-trained-on items) has {len(split.holdout)} item(s) {where}: at least "
            f"{MIN_HOLDOUT} are needed to measure membership inference; use more items or a larger holdout fraction"
        )
    return split


def preflight(cfg: RunConfig, store=None) -> None:
    """Everything about a run that can be checked without loading its model's weights, in the
    order a user would fix it: method and settings, run options, model files, data and selection."""
    check_settings(cfg.method, cfg.settings)
    check_run_options(cfg)
    if cfg.model != "demo" and not cfg.from_run:
        check_model_files(cfg.model)
    check_selection(cfg, store)


def never_cancelled() -> bool:
    """The default ``should_cancel``: nobody asks the run to stop."""
    return False


@dataclass
class _RunInputs:
    """What a run works on: its split of the dataset and the model on the run's device."""

    hierarchy: Hierarchy
    forget: list[str]
    split: Split
    bundle: ModelBundle
    model: torch.nn.Module
    tok: object
    max_len: int
    device: torch.device
    dtype: torch.dtype
    shards: sharding.ShardedBase | None = None  # a sharded base (cfg.fsdp): the model is the adapted, sharded one


@dataclass
class _ProbeBefore:
    """The original model probed, and what the later phases reuse from that probe."""

    scores: dict[str, list[dict]]
    calibration: list[QAItem]  # the non-members the stop rule calibrates on
    eval_ids: set[str]  # the other non-members: membership inference is evaluated on them
    neutral: list[str]  # texts the perplexity is measured on
    ppl: float
    gen_items: list[QAItem]  # the questions answered freely, before and after
    generations: list[str]
    gen_parts: list[str]  # "forget" or "retain", one per entry of gen_items


@dataclass
class _Unlearned:
    info: dict  # what the method reports (steps, why it stopped, ...)
    seconds: float
    state_before: dict[str, torch.Tensor]  # the weights before, on the CPU


@dataclass
class _ProbeAfter:
    scores: dict[str, list[dict]]
    ppl: float
    generations: list[str]
    changed: int  # weights changed by the method
    total: int


def run_unlearning(
    cfg: RunConfig,
    *,
    store=None,
    run_id: str | None = None,
    progress: ProgressFn = no_progress,
    should_cancel: Callable[[], bool] = never_cancelled,
) -> dict:
    """Execute one run. With a store, results are written under ``run_id``, whose row must exist
    (``lifecycle.create_run`` writes it; the lifecycle, not the engine, owns rows and statuses)."""
    t0 = time.time()
    check_settings(cfg.method, cfg.settings)  # fail before loading data or models
    device, dtype = resolve_compute(cfg.device, cfg.dtype)  # ... and before any work on a device that is not there
    if store is not None and (run_id is None or store.get_run(run_id) is None):
        raise ValueError(f"run_unlearning: no run row {run_id!r} in the store; create it first (lifecycle.create_run)")
    device = distributed.local_device(device)  # several processes on GPUs: one GPU each
    prepare_device(device)
    set_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_id = run_id or new_run_id()
    run = _prepare_inputs(cfg, store, progress, device, dtype)
    writes = store is not None and distributed.is_main()  # several processes: rank 0 writes, the others compute
    if writes:
        store.update_run(run_id, model_hash=run.bundle.model_hash, config_hash=cfg.hash())
    before = _probe_before(cfg, run, progress)
    unlearned = _unlearn(cfg, run, before, progress, should_cancel)
    # The other ranks' part ends with the method (rank 0 probes, attacks, writes), or with the
    # probes of a sharded model, which every process computes.
    after = _probe_after(run, before, unlearned, progress) if distributed.is_main() or run.shards else None
    if after is None:
        return {"run_id": run_id, "method": cfg.method, "info": unlearned.info}
    summary = _run_summary(run, before, after, unlearned, t0)
    summary.update(_attack(cfg, run, before, after, unlearned, progress))  # after the run's own time
    result = {
        "run_id": run_id,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "forget": list(run.forget),
        **summary,
        "info": unlearned.info,
        "model_hash": run.bundle.model_hash,
        "config_hash": cfg.hash(),
    }
    if writes:
        _write_results(store, run_id, cfg, run, (before, after), summary, result)
        receipt = _record_model(store, run_id, cfg, run, unlearned, summary)
        result.update(receipt_sha256=receipt_sha256(receipt), unlearned_root=receipt["unlearned"]["root"])
    progress(
        "done",
        1.0,
        f"forget acc {summary['forget_acc_before']:.2f} -> {summary['forget_acc_after']:.2f}, "
        f"retain {summary['retain_acc_before']:.2f} -> {summary['retain_acc_after']:.2f}",
    )
    return result


def _prepare_inputs(
    cfg: RunConfig, store, progress: ProgressFn, device: torch.device, dtype: torch.dtype
) -> _RunInputs:
    """Phase 1: the items, the hierarchy, the split, and the model on the run's device."""
    progress("load", 0.0, f"loading data {cfg.dataset}")
    items = load_items(cfg.dataset, cfg.limit)
    hierarchy = load_hierarchy(cfg, store)
    forget = forget_selection(cfg.forget, cfg.dataset)
    split = make_split(items, hierarchy, forget, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    if not split.forget:
        raise ValueError(f"the selection {forget} matches no trained-on items in {cfg.dataset}")
    progress("load", 0.0, f"forget {len(split.forget)}, retain {len(split.retain)}, holdout {len(split.holdout)}")
    if cfg.fsdp:  # the processes load in turn and keep their shards: one whole copy in host memory at a time
        mesh = sharding.process_mesh(device)
        with distributed.in_turn():
            bundle = _start_model(cfg, store, items, progress, device, dtype)
            model, shards = _shard_base(cfg, bundle.model.to(dtype=dtype), device, mesh, progress)
        tok, max_len = bundle.tokenizer, probe_max_len(bundle)
        return _RunInputs(hierarchy, forget, split, bundle, model, tok, max_len, device, dtype, shards)
    with distributed.main_first():  # rank 0 builds / caches the model, the others load it
        bundle = _start_model(cfg, store, items, progress, device, dtype)
    tok, max_len = bundle.tokenizer, probe_max_len(bundle)
    model = bundle.model.to(device=device, dtype=dtype)
    progress("load", 0.0, f"model {bundle.name} on {device_label(device)}, {cfg.dtype}")
    return _RunInputs(hierarchy, forget, split, bundle, model, tok, max_len, device, dtype)


def _shard_base(
    cfg: RunConfig, model: torch.nn.Module, device: torch.device, mesh, progress: ProgressFn
) -> tuple[torch.nn.Module, sharding.ShardedBase]:
    """A sharded run's model: the unlearning adapters put on first (so they stay out of the
    shards; while B is 0 the adapted model computes exactly what the model does), then the base
    sharded over the processes. Rank 0 keeps a plain copy of the original on its CPU."""
    skeleton = clone_model(model).cpu() if distributed.is_main() else None
    before = {k: v.detach().clone() for k, v in skeleton.state_dict().items()} if skeleton is not None else {}
    adapted, start = lora.wrap_for_unlearning(model, int(cfg.unlearn_lora_r or 0), cfg.seed)
    held = sharding.shard(adapted, device, mesh)
    progress("load", 0.0, f"base sharded over {distributed.world()} processes: {held:,} weights on this one")
    return adapted, sharding.ShardedBase(skeleton, before, start, held)


def _start_model(cfg: RunConfig, store, items, progress: ProgressFn, device, dtype) -> ModelBundle:
    """The model the run edits: an earlier run's unlearned model (rebuilt from its original and
    delta, checked against its receipt) for a chained request, else ``prepare_model``."""
    if not cfg.from_run:
        return prepare_model(cfg, items, progress, device, dtype)
    if store is None:
        raise ValueError(f"starting from run {cfg.from_run} needs the database that holds it")
    progress("load", 0.0, f"rebuilding the unlearned model of run {cfg.from_run}")
    return materialize(store, cfg.from_run)


def _probe_before(cfg: RunConfig, run: _RunInputs, progress: ProgressFn) -> _ProbeBefore:
    """Phase 2: probe the original model; split the non-members into calibration and evaluation."""
    progress("probe_before", 0.1, "probing before")
    scores = probe_all(run.model, run.tok, run.split, run.max_len)
    calib, evaluation = calibration_split(run.split.holdout, cfg.seed, holdout_losses(scores))
    neutral = [f"{it.question} {it.answer_text}" for it in run.split.holdout_retain[:64]]
    ppl = perplexity(run.model, run.tok, neutral, max_len=run.max_len)
    # n_generations prompts in all: the odd one goes to the forget side.
    forget_gen = run.split.forget[: (cfg.n_generations + 1) // 2]
    retain_gen = run.split.retain[: cfg.n_generations // 2]
    gen_items = forget_gen + retain_gen
    gen_parts = ["forget"] * len(forget_gen) + ["retain"] * len(retain_gen)
    generations = generate(run.model, run.tok, [it.question for it in gen_items])
    evaluated = {it.id for it in evaluation}
    return _ProbeBefore(scores, calib, evaluated, neutral, ppl, gen_items, generations, gen_parts)


def _unlearn(
    cfg: RunConfig, run: _RunInputs, before: _ProbeBefore, progress: ProgressFn, should_cancel: Callable[[], bool]
) -> _Unlearned:
    """Phase 3: the method edits ``run.model`` in place, against a frozen copy of it; with
    ``unlearn_lora_r`` it trains adapters on it instead, and ``run.model`` becomes the merged model."""
    # Kept on the CPU: on a GPU a second full copy of the weights would cost device memory.
    state_before = _state_before(run)
    method = get_method(cfg.method)
    lora_part = _lora_part(cfg, method)
    given = {**lora_part, **cfg.settings}
    settings, efficiency_info = _efficiency(cfg, run, {**method.defaults, **lora_part}, given)
    trained, ref, adapter_start = _trained_and_reference(cfg, run)
    ctx = UnlearnContext(
        model=trained,
        ref_model=ref,
        tok=run.tok,
        forget=run.split.forget,
        retain=run.split.retain,
        calibration=before.calibration,
        settings=settings,
        seed=cfg.seed,
        max_len=run.max_len,
        hierarchy=run.hierarchy,
        targeted=run.split.targeted,
        tags=run.split.tags,
        progress=progress,
        should_cancel=should_cancel,
    )
    progress("unlearn", 0.0, f"method {cfg.method}")
    t_unlearn = time.time()
    try:
        with efficiency.autocast(run.device, cfg.autocast):
            info = method.run(ctx)
    finally:
        if efficiency_info["gradient_checkpointing"]:
            efficiency.disable_checkpointing(run.model)
    if adapter_start is not None:
        info.update(_merge_adapter(cfg, run, trained, adapter_start))
    info.update(efficiency_info)
    if lora_part:
        info["lora_defaults"] = lora_part  # the settings the LoRA run took in place of the method's defaults
    info.update(training_info(run.bundle.meta))  # LoRA rank / DP budget of the injection, when used
    info["device"] = device_label(run.device)
    info["dtype"] = str(run.dtype).replace("torch.", "")
    return _Unlearned(info, time.time() - t_unlearn, state_before)


def _trained_and_reference(cfg: RunConfig, run: _RunInputs) -> tuple[torch.nn.Module, object, dict | None]:
    """What the method trains, its frozen reference, and the adapters' start values: the model and
    a frozen copy of it; with ``unlearn_lora_r`` the adapted model and the same model with its
    adapters off (no copy of the weights: the base is frozen under the adapters)."""
    if run.shards is not None:  # adapted and sharded when loaded
        return run.model, lora.frozen_reference(run.model), run.shards.adapter_start
    if cfg.unlearn_lora_r:
        adapted, start = lora.wrap_for_unlearning(run.model, cfg.unlearn_lora_r, cfg.seed)
        return adapted, lora.frozen_reference(adapted), start
    ref = clone_model(run.model)
    for p in ref.parameters():
        p.requires_grad_(False)
    return run.model, ref, None


def _merge_adapter(cfg: RunConfig, run: _RunInputs, trained, adapter_start: dict) -> dict:
    """Merge the unlearning adapters into ``run.model`` (the probes, the diff, the receipt and the
    export see plain weights) and return what changed, exactly: the adapter's size and the adapter
    elements the method moved. The weights the merge changed come from the run's own diff
    (``_probe_after``)."""
    moved = lora.adapter_changed(adapter_start, trained)
    if run.shards is None:
        run.model = lora.merge(trained)
    else:  # merged shard by shard; the whole model is gathered after the probes (_probe_after)
        sharding.merge_into_shards(trained)
    info = {
        "unlearn_lora_r": cfg.unlearn_lora_r,
        "unlearn_adapter_params": sum(t.numel() for t in adapter_start.values()),
        "unlearn_adapter_params_changed": moved,
    }
    if run.shards is not None:
        info.update(fsdp=True, weights_per_process=run.shards.local_elements)
    return info


def _state_before(run: _RunInputs) -> dict[str, torch.Tensor]:
    """The original weights on the CPU (a sharded run's were kept when it was loaded)."""
    if run.shards is not None:
        return run.shards.state_before
    return {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}


def _lora_part(cfg: RunConfig, method) -> dict:
    """The method's LoRA defaults a run through adapters takes, less the settings the user gave."""
    if not cfg.unlearn_lora_r:
        return {}
    return {k: v for k, v in lora_overrides(method).items() if k not in cfg.settings}


def _efficiency(cfg: RunConfig, run: _RunInputs, defaults: dict, given: dict) -> tuple[dict, dict]:
    """The settings ``given`` (the user's, plus a LoRA run's LoRA defaults) with the batch sizes
    left open fitted to the GPU's free memory (efficiency.py; unchanged on the CPU), gradient
    checkpointing switched on when asked, and what the run info records of both and of autocast."""
    ckpt = cfg.gradient_checkpointing and efficiency.enable_checkpointing(run.model)
    free = efficiency.free_memory(run.device)
    per_item = efficiency.bytes_per_item(run.model.config, run.max_len, run.dtype, ckpt) if free is not None else 0
    settings, chosen = efficiency.batch_settings(dict(given), defaults, free, per_item)
    info = {
        "autocast": efficiency.autocast_label(run.device, cfg.autocast),
        "gradient_checkpointing": ckpt,
        "batch_from_memory": chosen or None,
    }
    return settings, info


def _probe_after(
    run: _RunInputs, before: _ProbeBefore, unlearned: _Unlearned, progress: ProgressFn
) -> _ProbeAfter | None:
    """Phase 4: probe the edited model exactly as the original was probed. A sharded model is
    probed by every process and then gathered whole into rank 0's copy (None on the others)."""
    progress("probe_after", 0.9, "probing after")
    scores = probe_all(run.model, run.tok, run.split, run.max_len)
    ppl = perplexity(run.model, run.tok, before.neutral, max_len=run.max_len)
    generations = generate(run.model, run.tok, [it.question for it in before.gen_items])
    if run.shards is not None:
        gathered = sharding.gather_into(run.model, run.shards.skeleton)
        if gathered is None:
            return None
        run.model = gathered
    live = run.model.state_dict()
    changed, total = M.changed_fraction(unlearned.state_before, live, skip=tied_aliases(live))
    if "unlearn_lora_r" in unlearned.info:  # the merged model's changed weights are this diff's, not a second one
        unlearned.info["unlearn_merged_weights_changed"] = changed
    return _ProbeAfter(scores, ppl, generations, changed, total)


def _attack(
    cfg: RunConfig, run: _RunInputs, before: _ProbeBefore, after: _ProbeAfter, unlearned: _Unlearned, progress
) -> dict[str, float]:
    """Phase 4b, only with ``cfg.attacks``: is the knowledge gone or only hidden? The attacks work on
    copies of the unlearned model (``run.model`` is the run's output and stays as it is)."""
    names = parse_attacks(cfg.attacks)
    if not names:
        return {}
    original = clone_model(run.model)
    original.load_state_dict(unlearned.state_before)
    reference = None
    if "mia" in names and not cfg.from_run and (cfg.model == "demo" or cfg.inject):
        progress("attack", 0.95, "loading the retrain reference (the reference-model attack's reference)")
        ref = retrain_model(cfg, run.split, progress, run.device)
        reference = (ref.model.to(run.device), ref.tokenizer)
    ctx = AttackContext(
        model=run.model,
        tok=run.tok,
        original=original,
        original_tok=run.tok,
        split=run.split,
        before=before.scores,
        after=after.scores,
        eval_ids=before.eval_ids,
        max_len=run.max_len,
        seed=cfg.seed,
        pretrained=cfg.model != "demo",
        reference=reference,
        progress=progress,
    )
    return run_attacks(names, ctx)


def _run_summary(
    run: _RunInputs, before: _ProbeBefore, after: _ProbeAfter, unlearned: _Unlearned, t0: float
) -> dict[str, float]:
    """The run's numbers: the before/after metrics plus its size and timings."""
    summary = summarise(before.scores, after.scores, run.split, before.eval_ids)
    summary.update(
        {
            "changed_weights": after.changed,
            "total_weights": after.total,
            "changed_fraction": after.changed / max(after.total, 1),
            "ppl_before": before.ppl,
            "ppl_after": after.ppl,
            "unlearn_seconds": unlearned.seconds,
            "steps": unlearned.info.get("steps", 0),
            "seconds": time.time() - t0,
        }
    )
    return summary


def _write_results(
    store,
    run_id: str,
    cfg: RunConfig,
    run: _RunInputs,
    probes: tuple[_ProbeBefore, _ProbeAfter],
    summary: dict[str, float],
    result: dict,
) -> None:
    """Phase 5: probe rows, metrics, generations and the summary, under the run's id."""
    before, after = probes
    store.write_probe_results(run_id, "before", _rows(before.scores, run.split))
    store.write_probe_results(run_id, "after", _rows(after.scores, run.split))
    store.write_metrics(run_id, {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v == v})
    gens = [(i, it, part) for i, (it, part) in enumerate(zip(before.gen_items, before.gen_parts))]
    for phase, outputs in (("before", before.generations), ("after", after.generations)):
        store.write_generations(
            run_id,
            phase,
            [{"prompt_id": f"{part}:{it.id}", "prompt": it.question, "output": outputs[i]} for i, it, part in gens],
        )
    info = result["info"]
    store.update_run(run_id, summary={k: v for k, v in result.items() if k != "info"} | {"info": info})


def _record_model(store, run_id: str, cfg: RunConfig, run: _RunInputs, unlearned: _Unlearned, summary: dict) -> dict:
    """Phase 6: the run's receipt (hashes of both models, data, hierarchy, code) and, unless
    ``cfg.keep_model`` is off, its sparse delta: the unlearned model is the run's output."""
    source = {"run": cfg.from_run} if cfg.from_run else {"model": run.bundle.path}
    split = run.split
    fields = {
        "split_ids": {part: [it.id for it in getattr(split, part)] for part in ("forget", "retain", "holdout")},
        "hierarchy": {
            "version": cfg.hierarchy_version,
            "file": cfg.hierarchy,
            "sha256": hierarchy_sha256(run.hierarchy.to_dict()),
        },
        "compute": {"device": device_label(run.device), "dtype": cfg.dtype},
        "metrics": summary,
        "training": training_info(run.bundle.meta) or None,
        "adapter": {k: v for k, v in unlearned.info.items() if k.startswith("unlearn_")} or None,
    }
    return record_run_model(
        store,
        run_id,
        state_before=unlearned.state_before,
        model=run.model,
        source=source,
        receipt_fields=fields,
        keep_files=cfg.keep_model,
    )


def retrain_reference(cfg: RunConfig, progress: ProgressFn = no_progress) -> dict:
    """The ideal unlearner: the same recipe trained without the forget items (cached), probed on
    the same split. Only possible for models HDSU trains itself: the demo / tiny knowledge-injected
    models (retrained from scratch, on the CPU), or a given model with ``inject`` (the base model
    fine-tuned on the retained members only, on ``cfg.device``). A given model used as it is was
    trained elsewhere on data HDSU does not have: refused with a clear message."""
    if cfg.model != "demo" and not cfg.inject:
        raise ValueError(
            f"no retrain reference for {cfg.model}: it was trained outside HDSU on data HDSU "
            f"does not have; use --inject (HDSU fine-tunes it on the dataset, so it can also "
            f"fine-tune it without the forget items) or --no-retrain"
        )
    t0 = time.time()
    device, _ = resolve_compute(cfg.device, cfg.dtype)  # the reference itself is float32
    prepare_device(device)
    items = load_items(cfg.dataset, cfg.limit)
    hierarchy = load_hierarchy(cfg)
    forget = forget_selection(cfg.forget, cfg.dataset)
    split = make_split(items, hierarchy, forget, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    original = prepare_model(cfg, items, progress, device)
    retrained = retrain_model(cfg, split, progress, device)
    max_len = probe_max_len(original)  # probed exactly as the runs probe the original
    before = probe_all(original.model.to(device), original.tokenizer, split, max_len)
    after = probe_all(retrained.model.to(device), retrained.tokenizer, split, max_len)
    _, evaluation = calibration_split(split.holdout, cfg.seed, holdout_losses(before))
    summary = summarise(before, after, split, {it.id for it in evaluation})
    summary.update(
        {
            "changed_fraction": 1.0,
            "seconds": time.time() - t0,
            "retrain_train_seconds": retrained.meta.get("seconds", 0.0),
        }
    )
    if cfg.attacks:  # the same attacks on the ideal unlearner: the floor of what they can find
        ctx = AttackContext(
            model=retrained.model,
            tok=retrained.tokenizer,
            original=original.model,
            original_tok=original.tokenizer,
            split=split,
            before=before,
            after=after,
            eval_ids={it.id for it in evaluation},
            max_len=max_len,
            seed=cfg.seed,
            pretrained=cfg.model != "demo",
            progress=progress,
        )
        summary.update(run_attacks(cfg.attacks, ctx))
    return {"method": "retrain", "dataset": cfg.dataset, "model": cfg.model, "forget": list(forget), **summary}


def retrain_model(cfg: RunConfig, split: Split, progress: ProgressFn, device) -> ModelBundle:
    """The retrain reference's model (cached): the original's recipe on the retained members only."""
    if cfg.model == "demo":
        # The retrain keeps the original tokenizer recipe on the same members minus the forget items.
        return inject_knowledge(
            split.retain, name=f"retrain-{dataset_kind(cfg.dataset)}", recipe=injection_recipe(cfg), progress=progress
        )
    # The given base model, fine-tuned like the original but on the retained members only.
    return inject_knowledge(
        split.retain,
        name="retrain-custom",
        base=cfg.model,
        recipe=finetune_recipe(cfg),
        progress=progress,
        device=device,
    )


def new_run_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

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

from hdsu_core import metrics as M
from hdsu_core import paths
from hdsu_core.compute import device_label, prepare_device, resolve_compute, set_seed
from hdsu_core.datasets import QAItem, load_spec
from hdsu_core.demo_model import build_demo_model
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.methods import UnlearnContext, get_method
from hdsu_core.models import ModelBundle, clone_model, load_model
from hdsu_core.probes import generate, perplexity, score_mcq
from hdsu_core.tagging import Split, is_member, make_split, member_items
from hdsu_core.training import DEMO_RECIPE, inject_knowledge

ProgressFn = Callable[[str, float, str], None]

# Default forget selections for the public benchmarks (issue: MedMCQA Surgery; MHQA Anxiety,
# Depression, Trauma with OCD retained) and for the demo knowledge base.
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

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def dataset_kind(spec: str) -> str:
    return "demo" if spec == "demo" else spec.split(":", 1)[0]


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
            members, name="inject-custom", base=cfg.model, recipe=FINETUNE_RECIPE, progress=progress, device=device
        )
    return load_model(cfg.model, dtype=dtype)


# Knowledge injection into a given (pre-trained) model: a short, gentle fine-tune.
FINETUNE_RECIPE = {**INJECT_RECIPE, "lr": 5e-5, "max_epochs": 10}


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
    and the run would use the default)."""
    from hdsu_core.methods import get_method

    known = get_method(method).defaults
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(
            f"unknown setting(s) for method {method!r}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def run_unlearning(
    cfg: RunConfig,
    *,
    store=None,
    run_id: str | None = None,
    progress: ProgressFn = lambda p, f, m: None,
    should_cancel: Callable[[], bool] = lambda: False,
) -> dict:
    """Execute one run. With a store, results are written under ``run_id`` (created if missing)."""
    t0 = time.time()
    check_settings(cfg.method, cfg.settings)  # fail before loading data or models
    device, dtype = resolve_compute(cfg.device, cfg.dtype)  # ... and before any work on a device that is not there
    prepare_device(device)
    set_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_id = run_id or new_run_id()
    progress("load", 0.0, f"loading data {cfg.dataset}")
    items = load_items(cfg.dataset, cfg.limit)
    hierarchy = load_hierarchy(cfg, store)
    forget = cfg.forget or DEFAULT_FORGET.get(dataset_kind(cfg.dataset), [])
    split = make_split(items, hierarchy, forget, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    if not split.forget:
        raise ValueError(f"the selection {forget} matches no trained-on items in {cfg.dataset}")
    progress("load", 0.0, f"forget {len(split.forget)}, retain {len(split.retain)}, holdout {len(split.holdout)}")
    bundle = prepare_model(cfg, items, progress, device, dtype)
    model, tok = bundle.model.to(device=device, dtype=dtype), bundle.tokenizer
    progress("load", 0.0, f"model {bundle.name} on {device_label(device)}, {cfg.dtype}")
    max_len = probe_max_len(bundle)
    if store is not None and store.get_run(run_id) is None:
        store.create_run(
            run_id,
            author="cli",
            method=cfg.method,
            model=cfg.model,
            dataset=cfg.dataset,
            forget_concepts=list(forget),
            config=cfg.to_dict(),
            config_hash=cfg.hash(),
        )
    if store is not None:
        store.update_run(run_id, model_hash=bundle.model_hash, config_hash=cfg.hash())

    progress("probe_before", 0.1, "probing before")
    before = probe_all(model, tok, split, max_len)
    calib, evaluation = calibration_split(split.holdout, cfg.seed, holdout_losses(before))
    eval_ids = {it.id for it in evaluation}
    neutral = [f"{it.question} {it.answer_text}" for it in split.holdout_retain[:64]]
    ppl_before = perplexity(model, tok, neutral, max_len=max_len)
    gen_items = split.forget[: max(1, cfg.n_generations // 2)] + split.retain[: max(1, cfg.n_generations // 2)]
    gen_before = generate(model, tok, [it.question for it in gen_items])

    ref = clone_model(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    # Kept on the CPU: on a GPU a second full copy of the weights would cost device memory.
    state_before = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    method = get_method(cfg.method)
    ctx = UnlearnContext(
        model=model,
        ref_model=ref,
        tok=tok,
        forget=split.forget,
        retain=split.retain,
        calibration=calib,
        settings=dict(cfg.settings),
        seed=cfg.seed,
        max_len=max_len,
        hierarchy=hierarchy,
        targeted=split.targeted,
        tags=split.tags,
        progress=progress,
        should_cancel=should_cancel,
    )
    progress("unlearn", 0.0, f"method {cfg.method}")
    t_unlearn = time.time()
    info = method.run(ctx)
    info["device"] = device_label(device)
    info["dtype"] = str(dtype).replace("torch.", "")
    unlearn_s = time.time() - t_unlearn

    progress("probe_after", 0.9, "probing after")
    after = probe_all(model, tok, split, max_len)
    ppl_after = perplexity(model, tok, neutral, max_len=max_len)
    gen_after = generate(model, tok, [it.question for it in gen_items])
    changed, total = M.changed_fraction(state_before, model.state_dict())

    summary = summarise(before, after, split, eval_ids)
    summary.update(
        {
            "changed_weights": changed,
            "total_weights": total,
            "changed_fraction": changed / max(total, 1),
            "ppl_before": ppl_before,
            "ppl_after": ppl_after,
            "unlearn_seconds": unlearn_s,
            "steps": info.get("steps", 0),
            "seconds": time.time() - t0,
        }
    )
    result = {
        "run_id": run_id,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "forget": list(forget),
        **summary,
        "info": info,
        "model_hash": bundle.model_hash,
        "config_hash": cfg.hash(),
    }
    if store is not None:
        store.write_probe_results(run_id, "before", _rows(before, split))
        store.write_probe_results(run_id, "after", _rows(after, split))
        store.write_metrics(run_id, {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v == v})
        gens = []
        for i, it in enumerate(gen_items):
            part = "forget" if i < len(gen_items) - max(1, cfg.n_generations // 2) else "retain"
            gens.append((i, it, part))
        store.write_generations(
            run_id,
            "before",
            [{"prompt_id": f"{part}:{it.id}", "prompt": it.question, "output": gen_before[i]} for i, it, part in gens],
        )
        store.write_generations(
            run_id,
            "after",
            [{"prompt_id": f"{part}:{it.id}", "prompt": it.question, "output": gen_after[i]} for i, it, part in gens],
        )
        store.update_run(run_id, summary={k: v for k, v in result.items() if k != "info"} | {"info": info})
    progress(
        "done",
        1.0,
        f"forget acc {summary['forget_acc_before']:.2f} -> {summary['forget_acc_after']:.2f}, "
        f"retain {summary['retain_acc_before']:.2f} -> {summary['retain_acc_after']:.2f}",
    )
    return result


def retrain_reference(cfg: RunConfig, progress: ProgressFn = lambda p, f, m: None) -> dict:
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
    forget = cfg.forget or DEFAULT_FORGET.get(dataset_kind(cfg.dataset), [])
    split = make_split(items, hierarchy, forget, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction)
    kind = dataset_kind(cfg.dataset)
    original = prepare_model(cfg, items, progress, device)
    if cfg.model == "demo":
        # The retrain keeps the original tokenizer recipe on the same members minus the forget items.
        retrained = inject_knowledge(
            split.retain, name=f"retrain-{kind}", recipe=injection_recipe(cfg), progress=progress
        )
    else:  # the given base model, fine-tuned like the original but on the retained members only
        retrained = inject_knowledge(
            split.retain,
            name="retrain-custom",
            base=cfg.model,
            recipe=FINETUNE_RECIPE,
            progress=progress,
            device=device,
        )
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
    return {"method": "retrain", "dataset": cfg.dataset, "model": cfg.model, "forget": list(forget), **summary}


def new_run_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

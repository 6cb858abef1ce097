"""HDSU's settings and their defaults (docs/method.md gives the equations and the measurements
behind each value)."""

from __future__ import annotations

from hdsu_core.methods import schema
from hdsu_core.methods.base import STOP_MCQ_DEFAULT

# What hdsu takes instead of DEFAULTS when it trains LoRA adapters (--lora R) and the user left the
# setting open. At 0.1 % of an adapter the mask holds only B elements (A has no gradient while B is 0)
# and nothing is forgotten; over the whole adapter a step of norm 3 is a dense low-rank change to every
# adapted weight and overshoots. Measured on MedMCQA and MHQA (600-item samples, seeds 0 and 1) and on
# the toy (two seeds): docs/method.md, "LoRA unlearning".
LORA_DEFAULTS = {"mask_fraction": 1.0, "step_norm": 1.0}

DEFAULTS = {
    # ---- mask selection (mask.py)
    "mask_fraction": 0.001,  # fraction of all weights that may change
    "damping": 1.0,  # delta = damping * mean(F_retain)
    "fisher_batch": 4,  # micro-batch size for the empirical Fisher
    "fisher_forget_items": 1024,  # forget items scored for the Fisher (seeded sample when more)
    "fisher_retain_items": 2000,
    "fisher_retain_batch": 16,
    "mask_params": "",  # regex restricting which weight tensors may be masked ("" = all)
    # "per_item": each forget item first gets its own k/n weights; "global": pooled top-k
    "mask_allocation": "per_item",
    # ---- update geometry and the push loop (geometry.py, push.py)
    "step_norm": 3.0,  # L2 norm of every update (bounded step)
    "retain_weight": 3.0,  # alpha: weight of the hold gradient in the direction
    "step_decay": 0.5,  # the step norm is multiplied by this when the calibration AUC crosses stop_auc
    "min_step_share": 0.1,  # ... down to this share of step_norm
    "projection": True,  # ablation switch: geometric constraint on/off
    "forget_batch": 64,  # forget items per update step (all when fewer)
    "retain_batch": 128,
    "retain_kl_weight": 0.0,  # KL to the original model at retain answer positions, added to the retain NLL
    "hold_at_risk": 0,  # opt-in: this many retain items whose loss rose most join every hold batch
    "at_risk_margin": 0.1,  # ... when their answer loss rose more than this (nats) above the original
    "at_risk_pool": 2000,  # retain items watched for that (seeded sample when more)
    # ---- token roles and item focus (roles.py, push.py)
    "concept_weight": 0.2,  # push weight of targeted-concept term tokens
    "kl_weight": 1.0,  # weight of the KL hold on preserve tokens
    "beta": 0.2,  # NPO temperature of the push loss
    "shared_answer_weight": 1.0,  # push on answer tokens that also occur in retain answers
    "focus_level": 0.5,  # item focus: an item is forgotten past this quantile of non-member losses
    "forgotten_weight": 0.0,  # item focus: push weight of forget items already forgotten (1 = off)
    "token_level": True,  # ablation switch: concept-aware token weights on/off
    "option_weight": 0.0,  # option push (opt-in): weight of KL(uniform || MCQ decision) on forget items
    "option_batch": 16,  # ... on at most this many still-pushed items of each forget minibatch
    # ---- retain repair and settle (repair.py, settle.py)
    "repair_steps": 30,  # retain repair after the target is reached (0 = off)
    "repair_step_norm": 0.3,  # L2 norm of every repair update
    "repair_watch_margin": 2.0,  # retained items within this many nats of flipping are watched
    "settle_steps": 20,  # settle after the repair: pull over-forgotten items back (0 = off) ...
    "settle_margin": 0.03,  # ... when the calibration AUC is this far below stop_auc ...
    "settle_step_norm": 0.3,  # ... in steps of this L2 norm, until it is back at stop_auc
    # ---- stopping (base.StopRule)
    "max_steps": 300,
    "check_every": 5,
    "time_budget_s": 900.0,  # budget: safety net only
    "stop_auc": 0.5,  # stop when forget-vs-calibration MIA AUC reaches this ...
    "stop_mcq": STOP_MCQ_DEFAULT,  # ... and forget MCQ accuracy is no better than the non-members'
}

# The type and range of every setting above (methods/schema.py; checked before a run starts).
SCHEMA = {
    "mask_fraction": schema.FRACTION,
    "damping": schema.NON_NEGATIVE,
    "fisher_batch": schema.count(),
    "fisher_forget_items": schema.count(),
    "fisher_retain_items": schema.count(),
    "fisher_retain_batch": schema.count(),
    "mask_params": schema.REGEX,
    "mask_allocation": schema.choice("per_item", "global"),
    "step_norm": schema.POSITIVE,
    "retain_weight": schema.NON_NEGATIVE,
    "step_decay": schema.FRACTION,
    "min_step_share": schema.FRACTION,
    "projection": schema.FLAG,
    "forget_batch": schema.count(),
    "retain_batch": schema.count(),
    "retain_kl_weight": schema.NON_NEGATIVE,
    "hold_at_risk": schema.count(0),
    "at_risk_margin": schema.NON_NEGATIVE,
    "at_risk_pool": schema.count(),
    "concept_weight": schema.NON_NEGATIVE,
    "kl_weight": schema.NON_NEGATIVE,
    "beta": schema.POSITIVE,
    "shared_answer_weight": schema.NON_NEGATIVE,
    "focus_level": schema.QUANTILE,
    "forgotten_weight": schema.NON_NEGATIVE,
    "token_level": schema.FLAG,
    "option_weight": schema.NON_NEGATIVE,
    "option_batch": schema.count(),
    "repair_steps": schema.count(0),
    "repair_step_norm": schema.POSITIVE,
    "repair_watch_margin": schema.NON_NEGATIVE,
    "settle_steps": schema.count(0),
    "settle_margin": schema.NON_NEGATIVE,
    "settle_step_norm": schema.POSITIVE,
    "max_steps": schema.count(),
    "check_every": schema.count(),
    "time_budget_s": schema.POSITIVE,
    "stop_auc": schema.FRACTION,
    "stop_mcq": schema.FLAG,
}

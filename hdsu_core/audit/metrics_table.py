"""The report's metrics table: every stored metric with its label, formatted value and a
plain-language explanation (known metrics in a fixed order, any others after them)."""

from __future__ import annotations

from hdsu_core import fmt

METRIC_ROWS = [
    # key, label, kind (see fmt.metric_value), explanation
    (
        "forget_acc_before",
        "Forget accuracy before",
        "rate",
        "Share of the forget-set questions (trained-on items under the selected concepts) the model answered "
        "correctly before unlearning.",
    ),
    (
        "forget_acc_after",
        "Forget accuracy after",
        "rate",
        "The same questions after unlearning. Lower means more was forgotten; a model that never learnt them scores "
        "about its never-seen / chance level.",
    ),
    ("forgetting_rate", "Forgetting rate (FR)", "rate", "FR = 1 − forget accuracy after."),
    (
        "retain_acc_before",
        "Retain accuracy before",
        "rate",
        "Accuracy on trained-on questions outside the selection, before unlearning.",
    ),
    ("retain_acc_after", "Retain accuracy after", "rate", "The same after unlearning; it should barely move."),
    ("knowledge_preservation", "Knowledge preservation (KP)", "rate", "KP = retain accuracy after."),
    (
        "retain_change_points",
        "Retain change",
        "points",
        "Retain accuracy after − before, in percentage points. Negative values are collateral damage.",
    ),
    (
        "holdout_acc_before",
        "Holdout accuracy before",
        "rate",
        "Accuracy on questions the model was never trained on (both inside and outside the selection).",
    ),
    ("holdout_acc_after", "Holdout accuracy after", "rate", "The same after unlearning."),
    (
        "holdout_forget_acc_before",
        "Never-seen accuracy on selected concepts, before",
        "rate",
        "Accuracy before unlearning on never-trained questions under the selected concepts.",
    ),
    (
        "holdout_forget_acc_after",
        "Never-seen accuracy on selected concepts",
        "rate",
        "Accuracy after unlearning on never-trained questions under the selected concepts: the level a model that "
        "never learnt the forget set would reach.",
    ),
    (
        "mia_auc_before",
        "MIA AUC before (loss attack)",
        "auc",
        "How well a membership-inference attacker separates forget items from never-seen ones by their loss, before "
        "unlearning (1.0 = perfectly).",
    ),
    (
        "mia_auc",
        "MIA AUC after (loss attack)",
        "auc",
        "The same after unlearning. About 0.5 means an attacker cannot tell forgotten items from never-seen ones; "
        "well below 0.5 means the forget items now stand out by being unusually poorly known.",
    ),
    (
        "mia_auc_ci_low",
        "MIA AUC after, 95 % interval low",
        "auc",
        "Bootstrap interval of the loss-attack AUC after unlearning (forget items and never-seen items resampled, "
        "seeded). On a small forget set the AUC itself is uncertain by several points: an interval that contains 0.5 "
        "means the attacker's result is consistent with chance.",
    ),
    ("mia_auc_ci_high", "MIA AUC after, 95 % interval high", "auc", "Upper end of the same interval."),
    (
        "mia_auc_mink_before",
        "MIA AUC before (Min-K% attack)",
        "auc",
        "A second attack scoring the least likely answer tokens, before unlearning.",
    ),
    (
        "mia_auc_mink",
        "MIA AUC after (Min-K% attack)",
        "auc",
        "A second attack scoring the least likely answer tokens; same reading as above.",
    ),
    (
        "mia_resistance",
        "MIA resistance",
        "rate",
        "1 − 2·|AUC − 0.5|: 1 when the attacker is at chance, 0 when the attacker is perfect.",
    ),
    (
        "changed_fraction",
        "Changed-weight fraction",
        "fraction",
        "Share of model weights whose value differs after unlearning, counted from the actual element-wise weight "
        "diff.",
    ),
    ("changed_weights", "Changed weights", "count", "Number of individual weights that changed."),
    ("total_weights", "Total weights", "count", "Floating-point weights in the model."),
    (
        "ppl_before",
        "Perplexity before",
        "float",
        "Perplexity on neutral never-seen text before unlearning (fluency check).",
    ),
    (
        "ppl_after",
        "Perplexity after",
        "float",
        "The same after unlearning; a large rise means the model's language broke.",
    ),
    ("seconds", "Run time", "seconds", "Wall-clock time of the whole run."),
    ("unlearn_seconds", "Unlearning time", "seconds", "Time spent in the unlearning method itself."),
    ("steps", "Unlearning steps", "count", "Optimisation steps the method took."),
]


def metrics_table(metrics: dict[str, float]) -> list[dict]:
    """One row per metric: key, label, value (text), raw value, explanation. ``n_*`` counts are
    shown elsewhere (data counts) and left out."""
    rows = []
    known = {key for key, _, _, _ in METRIC_ROWS}
    for key, label, kind, expl in METRIC_ROWS:
        if key in metrics:
            v = fmt.number(metrics.get(key))
            rows.append({"key": key, "label": label, "value": fmt.metric_value(kind, v), "raw": v, "explanation": expl})
    for key in sorted(metrics):
        if key not in known and not key.startswith("n_"):
            v = fmt.number(metrics.get(key))
            rows.append({"key": key, "label": key, "value": fmt.REPORT.fixed(v, 4), "raw": v, "explanation": ""})
    return rows

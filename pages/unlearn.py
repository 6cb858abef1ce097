import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import jobs
from hdsu_core.artifacts.lineage_view import start_candidates
from hdsu_core.attack_targets import ATTACK_LABELS
from hdsu_core.compute import ModelError, available_devices
from hdsu_core.datasets import DatasetError
from hdsu_core.engine import MAX_PROCESSES, RunConfig
from hdsu_core.hierarchy import HierarchyError
from hdsu_core.methods import available, get_method, lora_overrides, run_defaults
from hdsu_core.model_zoo import NAMED_MODELS
from hdsu_core.run_estimate import quick_estimate
from hdsu_core.tagging import collateral_terms, make_split
from pages import _ui


def _quick_estimate(settings: dict, measure: bool) -> dict | None:
    """The quick-timing estimate of this run, or its one-line reason when the model cannot be timed."""
    try:
        return quick_estimate(
            model,
            settings=settings,
            n_forget=len(split.forget),
            n_retain=len(split.retain),
            n_holdout=len(split.holdout),
            device=ss.get("device", "auto"),
            measure=measure,
        )
    except (ModelError, ValueError, OSError) as e:
        st.caption(f"Quick timing unavailable: {e}")
        return None


_ui.header(
    "Unlearn",
    "Check what the selection covers in the chosen dataset, pick a method, and launch a run. "
    "Runs execute in a separate worker process; follow them on the Runs page.",
)
store = _ui.store()
ss = st.session_state
h, hver = _ui.saved_hierarchy()
sel = D.clean_selection(h, _ui.selection())
if ss.get("hierarchy_dirty"):
    st.warning(
        "The hierarchy has unsaved edits: runs use the last saved version "
        f"({'data/hierarchy.json' if hver is None else f'version {hver}'}). Save on the Hierarchy page first "
        "to include them.",
        icon="⚠️",
    )

# ---- dataset & model -----------------------------------------------------------------------------
c1, c2 = st.columns(2, gap="large")
with c1:
    st.subheader("Data")
    choices = D.dataset_choices()
    labels = list(choices) + ["Other file…"]
    ds_label = st.selectbox("Dataset", labels, key="ds_label")
    if ds_label == "Other file…":
        kind = st.selectbox("Format", ["generic", "medmcqa", "mhqa", "mhqa_b"], key="ds_kind")
        path = st.text_input("Path to the file (CSV / JSONL)", key="ds_path", placeholder="/data/my_questions.jsonl")
        spec = f"{kind}:{path.strip()}" if path.strip() else ""
    else:
        spec = choices[ds_label]
with c2:
    st.subheader("Model")
    model_labels = {
        "demo": "Embedded demo model",
        **{name: m.label for name, m in NAMED_MODELS.items()},
        "local": "Local model path",
    }
    model_choice = st.radio(
        "Model",
        list(model_labels),
        horizontal=True,
        key="model_choice",
        format_func=model_labels.get,
    )
    model = "demo"
    inject = False
    if model_choice == "local":
        model = st.text_input("Hugging Face directory or .gguf file", key="model_path").strip()
        inject = st.checkbox("Fine-tune it on the dataset members first (knowledge injection)", key="inject")
    elif model_choice != "demo":
        model = model_choice
        st.caption(model_labels[model_choice] + ". On a CPU each training step takes tens of seconds: use few items.")
        inject = st.checkbox(
            "Fine-tune it on the dataset members first (knowledge injection)", value=True, key="inject_named"
        )
    elif spec != "demo":
        st.caption(
            "On a real dataset the demo recipe first trains a tiny model on that dataset's members "
            "(cached after the first run)."
        )
    if inject:
        i1, i2 = st.columns(2)
        i1.number_input(
            "Injection LoRA rank (0 = all weights)",
            value=0,
            min_value=0,
            step=4,
            key="inject_lora_r",
            help="Fine-tune rank-R LoRA adapters (peft) and merge them into the weights",
        )
        i2.number_input(
            "Injection DP-SGD ε (0 = off)",
            value=0.0,
            min_value=0.0,
            step=1.0,
            key="inject_dp_epsilon",
            help="Fine-tune with DP-SGD (opacus) to this privacy budget (δ 1e-5, clip 1.0); needs a LoRA rank",
        )
    starts = start_candidates(store, spec) if spec else {}
    from_run = st.selectbox(
        "Start from",
        [""] + list(starts),
        format_func=lambda r: starts.get(r, "the original model"),
        key="from_run",
        help="A chained request: start from an earlier run's unlearned model (the receipt then names "
        "that model as the original, and the lineage is kept)",
    )

# ---- selection counts ----------------------------------------------------------------------------
st.subheader("Forget selection")
split = None
if not sel:
    st.info("Nothing selected yet. Pick concepts on the **Hierarchy** page (or below).", icon="👈")
options = D.concept_options(h)


def _ms():
    _ui.set_selection(D.clean_selection(h, ss["unlearn_ms"]))


ss["unlearn_ms"] = list(sel)
st.multiselect(
    "Concepts to forget",
    list(options),
    format_func=options.get,
    key="unlearn_ms",
    on_change=_ms,
    placeholder="Search concepts…",
)

seed = int(ss.get("seed", 0))
holdout_fraction = float(ss.get("holdout_fraction", 0.2))
data_error = None
if sel and spec:
    try:
        its = _ui.items(spec)
        tags = _ui.tags(spec, h)
        split = make_split(its, h, sel, seed=seed, holdout_fraction=holdout_fraction, tags=tags)
    except (DatasetError, HierarchyError, OSError) as e:
        data_error = str(e)
if data_error:
    st.error(f"Cannot use this dataset: {data_error}", icon="🚫")
if split is not None:
    tot = D.split_totals(split)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Forget (trained on)", tot["forget"], border=True, help="Items under the selection the model was trained on"
    )
    m2.metric("Retain", tot["retain"], border=True, help="Trained-on items outside the selection: must be preserved")
    m3.metric("Holdout", tot["holdout"], border=True, help="Never trained on: non-members for the MIA test")
    m4.metric("Untagged", tot["untagged"], border=True, help="Items no concept matched (kept in retain/holdout)")
    st.dataframe(
        D.split_table(h, split),
        hide_index=True,
        width="stretch",
        column_config={"forget": st.column_config.NumberColumn("forget", help="trained on, to forget")},
    )
    if tot["forget"] == 0:
        st.warning("The selection matches no trained-on items in this dataset: a run would fail.", icon="⚠️")
    coll = collateral_terms(h, sel)
    if coll:
        with st.expander(f"⚠️ Collateral risk: {len(coll)} term(s) shared with preserved concepts", expanded=False):
            st.dataframe(D.collateral_table(h, coll), hide_index=True, width="stretch")
    else:
        st.caption("✅ No term of the selection is shared with a preserved concept.")

# ---- method ------------------------------------------------------------------------------------------
st.subheader("Method")
methods = available()
method = st.selectbox(
    "Unlearning method",
    methods,
    index=methods.index("hdsu") if "hdsu" in methods else 0,
    key="method",
    help="hdsu: hierarchical, concept-aware, sparse and bounded; the others are baselines",
)
through_lora = bool(ss.get("unlearn_lora_r"))  # a LoRA run starts from the method's LoRA defaults
defaults = run_defaults(get_method(method), lora=through_lora)
settings = {}
keys = D.key_settings(defaults)
widget_prefix = f"set_{method}_{'lora_' if through_lora else ''}"
cols = st.columns(max(1, len(keys)))
for col, (k, v) in zip(cols, keys.items()):
    with col:
        if isinstance(v, int):
            settings[k] = int(
                st.number_input(k, value=int(v), step=max(1, int(v) // 10 or 1), key=f"{widget_prefix}{k}")
            )
        else:
            settings[k] = float(
                st.number_input(
                    k, value=float(v), format="%g", step=float(v) / 10 if v else 0.1, key=f"{widget_prefix}{k}"
                )
            )
with st.expander("Split and compute settings"):
    s1, s2, s3, s4 = st.columns(4)
    s1.number_input("Seed", value=0, step=1, key="seed")
    s2.number_input("Holdout fraction", value=0.2, min_value=0.05, max_value=0.9, step=0.05, key="holdout_fraction")
    devices = available_devices()
    s3.selectbox(
        "Device",
        list(devices),
        format_func=devices.get,
        key="device",
        help="Where the run computes: auto takes a CUDA GPU when one is visible, else the CPU",
    )
    s4.selectbox(
        "Weight precision",
        list(D.DTYPE_OPTIONS),
        format_func=D.DTYPE_OPTIONS.get,
        key="dtype",
        help="bfloat16 halves the memory of a large model; losses and updates stay float32",
    )
    p1, p2, p3, p4 = st.columns([1, 1, 1, 2])
    p1.number_input(
        "Processes",
        value=1,
        min_value=1,
        max_value=MAX_PROCESSES,
        step=1,
        key="processes",
        help="Data-parallel processes through torchrun: one per GPU on CUDA, or several on a CPU; "
        "the result is the one-process result",
    )
    p1.checkbox(
        "Shard the base (FSDP)",
        key="fsdp",
        help="With 2+ processes and a LoRA rank: the frozen base is sharded over the processes (FSDP2) "
        "for a model that does not fit one device; every process computes the whole batch",
    )
    p2.checkbox(
        "Gradient checkpointing",
        key="gradient_checkpointing",
        help="Recompute activations in the backward pass: less GPU memory for a large model, slower steps",
    )
    p3.number_input(
        "Unlearning LoRA rank (0 = off)",
        value=0,
        min_value=0,
        step=4,
        key="unlearn_lora_r",
        help="The method trains rank-R LoRA adapters only; they are merged into the weights before the "
        "probes, the delta and the receipt. A mask fraction then counts adapter parameters; hdsu then "
        "defaults to mask_fraction 1 and step_norm 1 (docs/method.md, LoRA unlearning)",
    )
    p4.multiselect(
        "Is it really gone? attacks after the run",
        list(ATTACK_LABELS),
        format_func=ATTACK_LABELS.get,
        key="attacks",
        help="Off by default (they cost minutes): the results show on Compare, tab 'Is it really gone?', "
        "and as verdict rows in the audit report",
    )

# ---- launch ------------------------------------------------------------------------------------------
problems = []
if not sel:
    problems.append("select at least one concept to forget")
if not spec:
    problems.append("give a dataset path")
if model_choice == "local" and not model:
    problems.append("give a model path")
if split is not None and not split.forget:
    problems.append("the selection matches no trained-on items")
if data_error:
    problems.append("fix the dataset")
if ss.get("fsdp") and (int(ss.get("processes", 1)) < 2 or not ss.get("unlearn_lora_r")):
    problems.append("sharding the base (FSDP) needs 2 or more processes and a LoRA rank")
no_launch = _ui.refusal("launch")
if no_launch:
    problems.append(no_launch)
changed = {k: v for k, v in settings.items() if v != defaults.get(k)}
lora_note = ", ".join(f"{k}={v:g}" for k, v in lora_overrides(get_method(method)).items()) if through_lora else ""
st.caption(
    f"Launching as **{_ui.actor()}** · method **{method}** · "
    f"{'default settings' if not changed else 'changed: ' + ', '.join(f'{k}={v:g}' for k, v in changed.items())}"
    + (f" · through LoRA adapters of rank {int(ss['unlearn_lora_r'])}" if through_lora else "")
    + (f" (LoRA defaults: {lora_note})" if lora_note else "")
)
if spec:
    estimate = D.run_time_estimate(store.list_runs(limit=500), model=model, dataset=spec, method=method)
    quick = None
    if estimate is None and split is not None and model:
        quick = _quick_estimate({**defaults, **settings}, measure=False)
    if quick:
        st.caption(f"⏱️ Estimated run time: {D.quick_estimate_text(quick)}.")
    else:
        st.caption(f"⏱️ Estimated run time: {D.run_time_estimate_text(estimate)}.")
    if estimate is None and quick is None and split is not None and model:
        if st.button("Time one step of this model (quick timing)", icon="⏱️", key="quick_timing"):
            with st.spinner("Loading the model and timing one forward + backward…"):
                _quick_estimate({**defaults, **settings}, measure=True)
            st.rerun()
if problems:
    st.info("To launch: " + "; ".join(problems) + ".", icon="ℹ️")
if st.button("Launch unlearning run", type="primary", icon="🚀", disabled=bool(problems), key="launch"):
    cfg = RunConfig(
        forget=list(sel),
        method=method,
        model=model,
        dataset=spec,
        hierarchy_version=hver,
        seed=seed,
        holdout_fraction=holdout_fraction,
        settings=changed,
        inject=inject,
        recipe=D.injection_recipe(ss.get("inject_lora_r"), ss.get("inject_dp_epsilon")) if inject else {},
        device=ss.get("device", "auto"),
        dtype=ss.get("dtype", "float32"),
        from_run=from_run or None,
        processes=int(ss.get("processes", 1)),
        gradient_checkpointing=bool(ss.get("gradient_checkpointing", False)),
        attacks=list(ss.get("attacks") or []),
        unlearn_lora_r=int(ss.get("unlearn_lora_r") or 0) or None,
        fsdp=bool(ss.get("fsdp", False)),
    )
    try:
        rid = jobs.launch(cfg, store=store, author=_ui.actor())
    except (ValueError, OSError) as e:
        st.error(f"Launch failed: {e}", icon="🚫")
    else:
        ss["last_launched"] = rid
if ss.get("last_launched"):
    st.success(f"Run **{ss['last_launched']}** launched.", icon="🚀")
    st.page_link("pages/runs.py", label="Follow it on the Runs page", icon="⏱️")

import streamlit as st

from hdsu_core import bench_jobs
from hdsu_core import dashboard as D
from hdsu_core.compute import available_devices
from hdsu_core.hierarchy import load_default
from hdsu_core.methods import available
from pages import _ui

_ui.header(
    "Benchmarks",
    "Which method should we use? Every method unlearns the same selection from the same model and "
    "split, next to the retrain reference (the model trained without the forget items: what an ideal "
    "unlearner reaches). Results come from `python -m hdsu_core bench` or from a benchmark launched here.",
)
store = _ui.store()
ss = st.session_state


def _launch_form() -> None:
    choices = D.dataset_choices()
    h0 = load_default()  # benches, like `bench` on the command line, use data/hierarchy.json
    options = D.concept_options(h0)
    with st.form("bench_form"):
        a, b = st.columns(2)
        datasets = a.multiselect("Datasets", list(choices), default=list(choices)[:1], key="bench_ds")
        methods = b.multiselect("Methods", available(), default=available(), key="bench_methods")
        forget = st.multiselect(
            "Forget (empty: each dataset's default selection)",
            list(options),
            default=[c for c in _ui.selection() if c in options],
            format_func=options.get,
            key="bench_forget",
        )
        c, d, e, g, f = st.columns(5)
        seeds = c.text_input("Seeds", value="0", help="comma separated, e.g. 0,1,2: a bench per seed", key="bench_seed")
        limit = d.number_input("Item limit (0: all)", min_value=0, value=0, step=100, key="bench_limit")
        devices = available_devices()
        device = e.selectbox("Device", list(devices), format_func=devices.get, key="bench_device")
        lora_r = g.number_input(
            "Unlearning LoRA rank (0: off)",
            min_value=0,
            value=0,
            step=4,
            key="bench_lora_r",
            help="Every method trains rank-R LoRA adapters only, merged into the weights before the probes",
        )
        retrain = f.checkbox("Retrain reference", value=True, key="bench_retrain")
        st.caption(f"Launching as **{_ui.actor()}**. Each method's run also appears on the Runs page.")
        go = st.form_submit_button("Launch benchmark", type="primary", icon="🚀", disabled=bool(_ui.refusal("launch")))
    if go:
        try:
            cfg = bench_jobs.bench_config(
                [choices[x] for x in datasets],
                methods,
                forget=forget,
                seeds=D.parse_seeds(seeds),
                retrain=retrain,
                limit=int(limit) or None,
                device=device,
                lora_r=int(lora_r) or None,
            )
            ss["bench_launched"] = bench_jobs.launch(cfg, store=store, author=_ui.actor())
        except (ValueError, OSError) as err:
            st.error(f"Launch failed: {err}", icon="🚫")
    if ss.get("bench_launched"):
        st.success(f"Benchmark **{ss['bench_launched']}** launched.", icon="🚀")


def _cancel(job_id: str) -> None:
    ss["bench_flash"] = f"{job_id}: {bench_jobs.cancel(job_id, store=store, actor=_ui.actor())}"


_jobs = bench_jobs.list_jobs()
_live = any(j.get("status") in bench_jobs.ACTIVE for j in _jobs)


@st.fragment(run_every=2 if _live else None)
def bench_progress() -> None:
    jobs = bench_jobs.list_jobs()
    active = [j for j in jobs if j.get("status") in bench_jobs.ACTIVE]
    if ss.get("bench_flash"):
        st.info(ss.pop("bench_flash"), icon="⏹️")
    if not active:
        if ss.get("bench_had_active"):
            ss["bench_had_active"] = False
            st.rerun()  # a bench just finished: show its rows
        for j in jobs[:3]:
            st.caption(D.job_line(j) + (f" · {j['error']}" if j.get("error") else ""))
        return
    ss["bench_had_active"] = True
    for j in active:
        with st.container(border=True):
            a, b = st.columns([4, 1])
            a.markdown(D.job_line(j))
            b.button("Cancel", key=f"cancel_{j['job_id']}", on_click=_cancel, args=(j["job_id"],), icon="⏹️")
            frac = float(j.get("progress") or 0.0)
            step = f"step {j.get('unit', 0)} of {j.get('units', '?')}"
            st.progress(min(1.0, max(0.0, frac)), text=f"{step} · {frac:.0%} · {j.get('message') or j.get('phase')}")
            with st.expander("Log", expanded=False):
                st.code(bench_jobs.log_tail(j["job_id"]) or "(no output yet)", language=None)


frame = D.bench_frame(store.bench_results())
with st.expander("Launch a benchmark", expanded=frame.empty, icon="🚀"):
    _launch_form()
bench_progress()

if frame.empty:
    st.info("No benchmark results yet: launch one above or run `python -m hdsu_core bench`.", icon="ℹ️")
    st.stop()

f1, f2, f3 = st.columns(3)
datasets = f1.multiselect(
    "Dataset", sorted(frame["dataset"].unique()), format_func=D.dataset_label, key="bench_f_ds", placeholder="all"
)
seeds = f2.multiselect("Seed", sorted(frame["seed"].unique()), key="bench_f_seed", placeholder="all")
first, last = frame["created_at"].min().date(), frame["created_at"].max().date()
# No key: when new rows extend the dates, the widget is a new one and takes the whole new range.
days = f3.date_input("Benched between", value=(first, last), min_value=first, max_value=last)
since, until = (tuple(days) + (None, None))[:2] if isinstance(days, (tuple, list)) else (days, days)
shown = D.filter_bench(frame, datasets=datasets, seeds=seeds, since=since, until=until)
summary = D.bench_summary(shown)
if summary.empty:
    st.info("No benchmark rows match the filters.", icon="ℹ️")
for i, setting in enumerate(summary["setting"].unique()):
    part = summary[summary["setting"] == setting].reset_index(drop=True)
    front = D.pareto_front(part)
    st.subheader(setting)
    st.caption(
        f"Means over {int(part['seeds'].max())} seed(s) (error bars: standard deviation). "
        f"**Pareto front** (no other method forgets more *and* keeps more): {', '.join(front) or '–'}."
    )
    st.dataframe(D.bench_table(part), hide_index=True, width="stretch", key=f"bench_table_{i}")
    c1, c2, c3 = st.columns(3)
    c1.markdown("**Forget vs retain accuracy**")
    c1.plotly_chart(D.bench_tradeoff_figure(part), width="stretch", key=f"bench_tradeoff_{i}")
    c2.markdown("**MIA AUC vs forgetting**")
    c2.plotly_chart(D.bench_mia_figure(part), width="stretch", key=f"bench_mia_{i}")
    c3.markdown("**Changed weights**")
    c3.plotly_chart(D.bench_changed_figure(part), width="stretch", key=f"bench_changed_{i}")

with st.expander(f"Every stored row ({len(shown)})"):
    st.dataframe(shown, hide_index=True, width="stretch")

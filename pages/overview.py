import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core.demo_status import demo_model_status
from pages import _ui

_ui.header(
    "HDSU Studio",
    "Hierarchical, concept-aware unlearning for medical language models: pick concepts "
    "in a medical hierarchy, remove that knowledge from a model, and prove what changed.",
)
store = _ui.store()
h = _ui.working_hierarchy()

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("The model")
    status = demo_model_status()
    r = status["recipe"]
    st.markdown(
        f"The **embedded demo model** is a tiny Llama ({r['layers']} layers, hidden size {r['hidden']}, "
        f"{r['vocab']:,}-token vocabulary) trained from scratch on the members of the demo knowledge "
        f"base, so it *knows* those facts; holdout items are never trained on and serve as "
        f"non-members for membership-inference tests. You can also point a run at a local Hugging Face "
        f"directory or a GGUF file."
    )
    if status["built"]:
        meta = status["meta"]
        acc = meta.get("train_acc", meta.get("acc"))
        extra = f", training accuracy {acc:.0%}" if isinstance(acc, (int, float)) else ""
        st.success(f"Demo model is built and cached ({meta.get('items', '?')} training items{extra}).", icon="✅")
    else:
        st.info(
            "Demo model not built yet: the first run builds it (a few minutes on a CPU), later runs reuse it.", icon="ℹ️"
        )
with right:
    st.subheader("The hierarchy")
    counts = h.level_counts()
    c1, c2 = st.columns(2)
    c1.metric("Concepts", f"{len(h):,}", border=True)
    c2.metric("Top-level branches", counts[1], border=True)
    st.caption(
        " · ".join(f"L{k}: {v}" for k, v in counts.items()) + "  — foundational science › clinical "
        "domain › specialty topic › specific detail"
    )

st.subheader("Latest runs")
runs = store.list_runs(limit=8)
if runs.empty:
    st.caption("No runs yet.")
else:
    st.dataframe(D.latest_runs_table(runs, store.metrics), hide_index=True, width="stretch")

st.subheader("How to start")
s1, s2, s3 = st.columns(3)
with s1:
    st.markdown(
        "**1 · Choose what to forget**  \nClick concepts in the hierarchy (or search for them) and add "
        "them to the forget selection."
    )
    st.page_link("pages/hierarchy.py", label="Open the hierarchy", icon="🌳")
with s2:
    st.markdown(
        "**2 · Launch an unlearning run**  \nCheck forget / retain counts and collateral warnings, "
        "pick a method, launch."
    )
    _ui.page_link("pages/unlearn.py", label="Set up a run", icon="✂️")
with s3:
    st.markdown(
        "**3 · Inspect and report**  \nFollow progress live, compare before / after per concept, "
        "and export an audit report."
    )
    st.page_link("pages/compare.py", label="Compare results", icon="📊")

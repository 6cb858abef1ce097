import pandas as pd
import streamlit as st

from hdsu_core.artifacts import run_models as RM
from hdsu_core.artifacts.lineage_view import model_tree
from pages import _ui

_ui.header(
    "Models",
    "Every original model and the unlearned models made from it, run after run: hashes, what each "
    "run forgot, and the size of its files. Each unlearned model is its parent plus a sparse delta; "
    "download it, check it with `python -m hdsu_core model verify`, or roll it back.",
)
store = _ui.store()
ss = st.session_state

tree = model_tree(store)
if not tree:
    st.info("No unlearned models yet: every finished run adds one.", icon="ℹ️")
    _ui.page_link("pages/unlearn.py", label="Set up a run", icon="✂️")
    st.stop()

rows = [
    {
        "model": ("\u2003" * (n["depth"] - 1) + "└ " + n["run_id"])
        if n["kind"] == "unlearned"
        else "📦 " + str(n["model"]),
        "method": n["method"],
        "forgot": n["forgot"],
        "root sha256": n["root"],
        "files": n["files"],
        "by": n["author"],
    }
    for n in tree
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

run_ids = [n["run_id"] for n in tree if n["kind"] == "unlearned"][::-1]
rid = st.selectbox("Unlearned model", run_ids, key="models_run")
try:
    rm = RM.get_run_model(store, rid)
    chain = RM.lineage(store, rid)
except RM.RunModelError as e:
    st.error(str(e), icon="🚫")
    st.stop()

c1, c2 = st.columns(2)
c1.markdown("**Original (root sha256)**")
c1.code(rm.original.root, language=None)
c2.markdown("**Unlearned (root sha256)**")
c2.code(rm.unlearned.root, language=None)
st.markdown("**Lineage** (oldest first)")
st.markdown(
    "  \n".join(
        f"{i}. "
        + (f"original `{c['model']}`" if "model" in c else f"run `{c['run']}` forgot {', '.join(c['forget'] or [])}")
        + f" · `{c['root'][:16]}`"
        for i, c in enumerate(chain, 1)
    )
)
_ui.model_downloads(store, rid, key="models")

with st.expander("Delete this run's model files"):
    st.caption(
        "The receipt, metrics and hashes stay: the run remains provable, but its model can no longer be rebuilt."
    )
    sure = st.checkbox("I understand the model files are gone for good", key=f"del_sure_{rid}")
    why = _ui.refusal("export_model")
    if why:
        st.caption(f"🔒 {why}")
    if st.button("Delete model files", icon="🗑️", disabled=not sure or bool(why), key=f"del_{rid}"):
        try:
            freed = RM.delete_run_files(store, rid, _ui.actor())
        except RM.RunModelError as e:
            st.error(str(e), icon="🚫")
        else:
            st.success(f"Deleted {freed:,} bytes; the receipt of {rid} remains.", icon="🗑️")

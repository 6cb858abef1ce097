import time

import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import workspace as W
from hdsu_core.hierarchy import Concept, Hierarchy, HierarchyError, diff_summary
from hdsu_core.icd10 import import_branch
from hdsu_core.store import RunStatus
from pages import _ui

_ui.header(
    "Hierarchy",
    "Four levels: foundational science › clinical domain › specialty topic › specific detail. "
    "Click a concept (or search for it) to see its details and add it to the forget selection.",
)
store = _ui.store()
h = _ui.working_hierarchy()
hkey = _ui.working_key()
ss = st.session_state
ss.setdefault("forget_selection", [])


@st.cache_data(show_spinner=False, max_entries=32)
def _figure(hkey: str, selected: tuple, color_by: str, kind: str, _h: Hierarchy):
    return D.hierarchy_figure(_h, selected, color_by=color_by, kind=kind)


@st.cache_data(show_spinner=False, max_entries=8)
def _arrays(hkey: str, _h: Hierarchy):
    return D.tree_arrays(_h)


@st.cache_data(show_spinner=False, max_entries=16)
def _counts(spec: str, mtime: float, hkey: str, _h: Hierarchy) -> dict:
    return D.tag_counts(_ui.tags(spec, _h, hkey))


def _focus_on(cid: str) -> None:
    """A concept clicked in a chart: show its details (and open it in the graph)."""
    ss["hier_last_click"] = cid
    ss["focus"] = cid
    ss["concept_pick"] = cid
    ss["edit_target"] = cid
    ss["graph_expanded"] = [*(c for c in ss.get("graph_expanded", []) if c != cid), cid]


@st.cache_data(show_spinner=False, max_entries=32)
def _graph_figure(hkey: str, selected: tuple, view: tuple, change_run: str | None, _h: Hierarchy, _change):
    depth, expanded, focus, branch, layout, color_by = view
    return D.hierarchy_graph_figure(
        _h,
        selected,
        depth=depth,
        expanded=expanded,
        focus=focus,
        branch=branch,
        layout=layout,
        color_by=color_by,
        change=_change,
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _run_change(db: str, run_id: str, hkey: str, _h: Hierarchy) -> dict:
    cmap = D.collateral_map(_h, store.probe_results(run_id))
    return dict(zip(cmap["concept_id"], cmap["change_pts"]))


def _change_run() -> str | None:
    """The finished run whose accuracy change colours the graph (None when there is none)."""
    runs = store.list_runs(limit=200)
    done = runs[runs["status"] == RunStatus.DONE] if not runs.empty else runs
    if done.empty:
        st.caption("No finished run yet: launch one to colour the graph by what it changed.")
        return None
    labels = {r["run_id"]: D.run_label(r) for _, r in done.iterrows()}
    return st.selectbox("Run", list(labels), format_func=labels.get, key="graph_run")


def _graph_chart(sel: list[str], color_by: str) -> str | None:
    """The node-link view: levels shown, layout, focus branch; returns the concept clicked."""
    g1, g2, g3 = st.columns([3, 2, 2], vertical_alignment="bottom")
    ss.setdefault("graph_depth", D.default_graph_depth(h))
    depth = g1.select_slider("Show levels down to", options=[1, 2, 3, 4], key="graph_depth", format_func="L{}".format)
    layout = g2.selectbox("Layout", D.GRAPH_LAYOUTS, key="graph_layout")
    if g3.button("Collapse", key="graph_collapse", help="Close the branches opened by clicks", width="stretch"):
        ss["graph_expanded"] = []
    branch_only = st.toggle(
        "Only the branch of the focused concept", key="graph_branch", help="Click or search a concept first"
    )
    change_run = _change_run() if color_by == "change" else None
    change = _run_change(str(store.path), change_run, hkey, h) if change_run else None
    # A click of the last rerun is read before drawing, so the clicked concept opens at once.
    clicked = D.graph_concept_from_event(ss.get("hier_chart_graph"), h)
    if clicked is None:
        ss["hier_last_click"] = None  # deselected: a second click on the same concept counts again
    elif clicked != ss.get("hier_last_click"):
        _focus_on(clicked)
    focus = ss.get("focus") if ss.get("focus") in h else None
    branch = ([focus, *h.ancestors(focus)][-1] if focus else None) if branch_only else None
    expanded = tuple(c for c in ss.get("graph_expanded", []) if c in h)
    view = (depth, expanded, focus, branch, layout, color_by)
    fig = _graph_figure(hkey, tuple(sel), view, change_run, h, change)
    st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="hier_chart_graph", width="stretch")
    st.caption(
        ":red[●] selected to forget · :orange[●] under a selected concept · :blue[●] preserved by level · "
        "dark ring: collapsed (click to open) · :violet[┄] shares a term with the selection"
        if color_by != "change"
        else ":red[●] accuracy dropped · :blue[●] kept or improved · grey: no probe items in this run"
    )
    return clicked


def _flash(msg: str) -> None:
    ss["hier_flash"] = msg


def _show_violations(err: HierarchyError) -> None:
    st.error(f"Refused: {len(err.violations)} problem(s).", icon="🚫")
    st.dataframe(D.violations_table(err.violations), hide_index=True, width="stretch")


def _apply(edit, label: str) -> None:
    """Run an edit on the working copy; show violations next to the change, rerun on success."""
    try:
        edit(h)
    except HierarchyError as e:
        _show_violations(e)
        return
    _ui.set_working(h)
    _flash(label)
    st.rerun()


# ---- status bar ----------------------------------------------------------------------------------
base = ss.get("hierarchy_base")
bar1, bar2, bar3 = st.columns([3, 1, 1])
src = "data/hierarchy.json (no saved version yet)" if base is None else f"saved version {base}"
bar1.markdown(
    f"**{h.name}** · {len(h):,} concepts · based on {src}"
    + (" · :orange[unsaved edits]" if ss.get("hierarchy_dirty") else "")
)
if bar3.button("Reload latest", help="Discard unsaved edits and load the latest saved version"):
    _ui.working_hierarchy(reload=True)
    st.rerun()
if ss.get("hier_flash"):
    st.success(ss.pop("hier_flash"), icon="✅")

options = D.concept_options(h)
ids = list(options)
tab_explore, tab_edit, tab_io, tab_hist = st.tabs(["Explore & select", "Edit", "Import / export", "History"])

# ---- explore & select ----------------------------------------------------------------------------
with tab_explore:
    sel = D.clean_selection(h, ss["forget_selection"])
    if sel != ss["forget_selection"]:
        _ui.set_selection(sel)
    c_chart, c_side = st.columns([3, 2], gap="large")
    with c_chart:
        o1, o2 = st.columns(2)
        kind = o2.radio("View", ["sunburst", "icicle", "graph"], horizontal=True, key="hier_kind")
        colours = {"selection": "by forget selection", "level": "by level"}
        if kind == "graph":
            colours["change"] = "by accuracy change of a run"
        color_by = o1.radio(
            "Colour",
            list(colours),
            horizontal=True,
            key="hier_color_graph" if kind == "graph" else "hier_color",
            format_func=colours.get,
        )
        t0 = time.perf_counter()
        if kind == "graph":
            clicked = _graph_chart(sel, color_by)
        else:
            fig = _figure(hkey, tuple(sel), color_by, kind, h)
            event = st.plotly_chart(
                fig, on_select="rerun", selection_mode="points", key=f"hier_chart_{kind}", width="stretch"
            )
            st.caption(
                ":red[■] selected to forget · :orange[■] under a selected concept · "
                ":blue[■] preserved (darker = higher level)"
                + (" · large hierarchy: 3 rings shown, click to zoom" if len(h) > D.LARGE_HIERARCHY else "")
            )
            clicked = D.concept_from_event(event, h, _arrays(hkey, h))
        if clicked and clicked != ss.get("hier_last_click"):
            _focus_on(clicked)
    with c_side:
        if ss.get("focus") not in options:
            ss["focus"] = sel[0] if sel else ids[0]
        if ss.get("concept_pick") not in options:
            ss["concept_pick"] = ss["focus"]

        def _pick():
            ss["focus"] = ss["concept_pick"]
            ss["edit_target"] = ss["concept_pick"]

        st.selectbox(
            "Find a concept",
            ids,
            format_func=options.get,
            key="concept_pick",
            on_change=_pick,
            help="Type to search by name or id",
        )
        cid = ss["focus"]
        d = D.concept_details(h, cid)
        st.markdown(f"#### {d['name']}")
        st.caption(f"{d['path']}")
        st.markdown(
            f"Level **{d['level']}** · {d['level_name']} · id `{d['id']}` · "
            f"{len(d['children'])} children, {d['n_descendants']} below"
        )
        roles = D.selection_roles(h, sel)
        role = roles.get(cid)
        if role == "selected":
            if st.button("Remove from forget selection", icon="➖", key="sel_remove", width="stretch"):
                _ui.set_selection(D.toggle_selection(sel, cid, add=False))
                st.rerun()
        elif role == "descendant":
            st.info("Already forgotten through a selected ancestor.", icon="ℹ️")
        else:
            if st.button("Add to forget selection", icon="➕", key="sel_add", type="primary", width="stretch"):
                _ui.set_selection(D.clean_selection(h, D.toggle_selection(sel, cid, add=True)))
                st.rerun()
        if d["terms"]:
            st.markdown("**Terms** " + " ".join(f"`{t}`" for t in d["terms"]))
        if d["codes"]:
            st.markdown("**Codes** " + ", ".join(f"{k}: `{v}`" for k, v in d["codes"].items()))
        if d["matchers"]:
            st.markdown(
                "**Matchers** "
                + "; ".join(f"{m.get('source')}.{m.get('field')} = “{m.get('equals')}”" for m in d["matchers"])
            )
        if d["description"]:
            st.caption(d["description"])
        choices = D.dataset_choices()
        st.markdown("**Matched items**")
        real = len(choices) > 1 and st.toggle(
            f"Also count in {', '.join(list(choices)[1:])}",
            key="count_real",
            help="Tags the real benchmark files once per hierarchy version (a few seconds)",
        )
        counts = {}
        for label, spec in choices.items() if real else list(choices.items())[:1]:
            counts[label.replace(" (embedded)", "")] = _counts(spec, D.spec_mtime(spec), hkey, h)
        st.dataframe(D.concept_item_counts(h, cid, counts), hide_index=True, width="stretch")

    st.markdown("##### Forget selection")

    def _ms():
        _ui.set_selection(D.clean_selection(h, ss["forget_ms"]))

    ss["forget_ms"] = list(sel)
    st.multiselect(
        "Concepts to forget (with everything below them)",
        ids,
        format_func=options.get,
        key="forget_ms",
        on_change=_ms,
        placeholder="Search concepts…",
    )
    if sel:
        _ui.page_link("pages/unlearn.py", label=f"Continue to Unlearn with {len(sel)} concept(s)", icon="✂️")
    st.caption(f"Figure: {1000 * (time.perf_counter() - t0):.0f} ms")

# ---- edit ----------------------------------------------------------------------------------------
with tab_edit:
    st.caption(
        "Edits change your working copy; every edit is validated (a child sits exactly one level "
        "below its parent, ids are unique, terms are not repeated). Save to create a new version."
    )
    if ss.get("edit_target") not in options:
        ss["edit_target"] = ss["focus"]
    target = st.selectbox("Concept to edit", ids, format_func=options.get, key="edit_target")
    e1, e2 = st.columns(2, gap="large")
    with e1:
        with st.form("rename_form"):
            st.markdown("**Rename**")
            new_name = st.text_input("New name", value=h.concept(target).name)
            desc = st.text_area("Description", value=h.concept(target).description, height=68)
            if st.form_submit_button("Apply"):
                _apply(
                    lambda x: x.update(target, name=new_name.strip(), description=desc),
                    f"Renamed {target} to “{new_name.strip()}”.",
                )
        with st.form("move_form"):
            st.markdown("**Move** (the whole subtree moves; levels shift)")
            parents = ["(none: make it a top-level branch)"] + [i for i in ids if i != target]
            cur = h.parent(target)
            new_parent = st.selectbox(
                "New parent",
                parents,
                index=parents.index(cur) if cur in parents else 0,
                format_func=lambda i: options.get(i, i),
            )
            if st.form_submit_button("Move"):
                np_ = None if new_parent.startswith("(none") else new_parent
                _apply(lambda x: x.move(target, np_), f"Moved {target} under {np_ or 'the root'}.")
        with st.form("delete_form"):
            st.markdown("**Delete**")
            mode = st.radio(
                "What happens to its children?",
                ["subtree", "reattach"],
                horizontal=True,
                format_func={"subtree": "delete them too", "reattach": "reattach them to the parent"}.get,
            )
            if st.form_submit_button("Delete", type="primary"):
                _apply(lambda x: x.delete(target, mode), f"Deleted {target} ({mode}).")
    with e2:
        st.markdown("**Terms** (surface forms used to tag questions)")
        edited = st.data_editor(
            D.terms_frame(h, target), num_rows="dynamic", hide_index=True, width="stretch", key=f"terms_{target}_{hkey}"
        )
        if st.button("Apply terms", key="apply_terms"):
            _apply(lambda x: x.set_terms(target, D.terms_from_frame(edited)), f"Updated the terms of {target}.")
        with st.form("add_form", clear_on_submit=False):
            st.markdown("**Add a concept**")
            a_name = st.text_input("Name")
            a_parents = ["(none: new top-level branch)"] + ids
            a_parent = st.selectbox(
                "Parent", a_parents, format_func=lambda i: options.get(i, i), index=a_parents.index(target)
            )
            a_terms = st.text_input("Terms (comma separated)")
            a_id = st.text_input("Id (optional)", placeholder="derived from the name")
            if st.form_submit_button("Add"):
                par = None if a_parent.startswith("(none") else a_parent
                new_id = a_id.strip() or W.new_concept_id(h, a_name or "concept")
                con = Concept(
                    id=new_id,
                    name=a_name.strip(),
                    level=1 if par is None else h.concept(par).level + 1,
                    parent=par,
                    terms=[t.strip() for t in a_terms.split(",") if t.strip()],
                )
                _apply(lambda x: x.add(con), f"Added {new_id}.")

    st.divider()
    st.markdown("##### Save a new version")
    if ss.get("hierarchy_dirty"):
        base_h = _ui.saved_hierarchy()[0]
        diff = base_h.diff(h)
        st.markdown(f"Pending: **{diff_summary(diff)}**")
        with st.expander("Diff"):
            st.json(diff, expanded=False)
    else:
        st.caption("No unsaved edits.")
    with st.form("save_form"):
        msg = st.text_input("Message", placeholder="what changed and why")
        st.caption(f"Saved as **{_ui.actor()}**.")
        no_edit = _ui.refusal("edit_hierarchy")
        if no_edit:
            st.caption(f"🔒 {no_edit}")
        if st.form_submit_button("Save", type="primary", disabled=not ss.get("hierarchy_dirty") or bool(no_edit)):
            res = W.save_hierarchy(store, h, base, _ui.actor(), msg)
            if res["ok"]:
                ss["hierarchy_base"] = res["version"]
                ss["hierarchy_dirty"] = False
                _flash(f"Saved version {res['version']}: {res['summary']}.")
                st.rerun()
            else:
                st.error(res["error"], icon="🚫")
                ss["hier_conflict"] = True
    if ss.get("hier_conflict"):
        if st.button("Reload the latest version (discards your edits)", key="reload_conflict"):
            ss["hier_conflict"] = False
            _ui.working_hierarchy(reload=True)
            st.rerun()

# ---- import / export -----------------------------------------------------------------------------
with tab_io:
    i1, i2 = st.columns(2, gap="large")
    with i1:
        st.markdown("##### Import from ICD-10-CM")
        with st.form("icd_form"):
            rng = st.text_input(
                "Chapter, block or category",
                value="F40-F48",
                help="e.g. F40-F48 (anxiety disorders), 5 (chapter 5), F32",
            )
            go_prev = st.form_submit_button("Preview")
        if go_prev:
            try:
                ss["icd_preview"] = import_branch(rng)
                ss["icd_range"] = rng
            except HierarchyError as e:
                ss.pop("icd_preview", None)
                _show_violations(e)
        br = ss.get("icd_preview")
        if br is not None:
            lc = br.level_counts()
            st.markdown(f"**{br.name}**: {len(br)} concepts (" + ", ".join(f"L{k} {v}" for k, v in lc.items()) + ")")
            st.dataframe(
                [{"id": c.id, "name": c.name, "level": c.level, "terms": len(c.terms)} for c in br.concepts()],
                hide_index=True,
                height=220,
                width="stretch",
            )
            b1, b2 = st.columns(2)
            mode = None
            if b1.button("Add as new L1 branch", type="primary", width="stretch"):
                mode = "add"
            if b2.button("Replace matching branch", width="stretch"):
                mode = "replace"
            if mode:
                try:
                    merged = W.import_icd10_branch(store, h, br, mode, actor=_ui.actor(), icd_range=ss.get("icd_range"))
                except HierarchyError as e:
                    _show_violations(e)
                else:
                    ss["hierarchy"] = merged
                    _ui.set_working(merged)
                    ss.pop("icd_preview", None)
                    _flash(f"Imported {ss.get('icd_range')} ({mode}); save to keep it.")
                    st.rerun()
    with i2:
        st.markdown("##### Export / upload JSON")
        st.download_button(
            "Download working hierarchy (JSON)",
            W.hierarchy_json(h),
            file_name="hierarchy.json",
            mime="application/json",
            icon="⬇️",
        )
        up = st.file_uploader("Upload a hierarchy JSON", type=["json"])
        if up is not None:
            new_h, violations = W.parse_hierarchy_json(up.getvalue())
            if violations:
                st.error(f"{up.name}: {len(violations)} problem(s); nothing was changed.", icon="🚫")
                st.dataframe(D.violations_table(violations), hide_index=True, width="stretch")
            else:
                st.success(f"{up.name} is valid: {len(new_h):,} concepts.", icon="✅")
                if st.button("Use as working hierarchy", type="primary"):
                    _ui.set_working(W.record_upload(store, new_h, actor=_ui.actor(), file_name=up.name))
                    _flash(f"Loaded {up.name}; save to keep it.")
                    st.rerun()

# ---- history ---------------------------------------------------------------------------------------
with tab_hist:
    versions = store.list_hierarchy_versions()
    if versions.empty:
        st.caption("No saved versions yet: the working hierarchy comes from data/hierarchy.json.")
    else:
        st.dataframe(versions, hide_index=True, width="stretch")

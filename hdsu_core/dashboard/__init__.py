"""View logic for the Streamlit dashboard: figures, tables, labels and selection helpers.

Pure functions over hdsu_core objects returning plain Python, pandas or plotly objects, so the
pages stay thin and the views are unit-testable. Never imports streamlit and never writes: the
shared hierarchy's versions live in :mod:`hdsu_core.workspace`, devices in
:func:`hdsu_core.compute.available_devices`, number formatting in :mod:`hdsu_core.fmt`.

The pages import this package as ``D``; the names below come from its modules:
``palette`` (colours, status labels), ``tree`` (the concept tree, selection, editor tables),
``data`` (datasets and splits), ``runs`` (run tables, labels, metric cards, launch settings) and
``results`` (probe results of a run).
"""

from hdsu_core.dashboard.data import (
    collateral_table,
    concept_item_counts,
    dataset_choices,
    spec_mtime,
    split_table,
    split_totals,
    tag_counts,
)
from hdsu_core.dashboard.palette import (
    FORGET,
    FORGET_LIGHT,
    GOOD,
    LEVEL_COLORS,
    PRESERVED,
    PRESERVED_LIGHT,
    STATUS_ICONS,
)
from hdsu_core.dashboard.results import (
    QUESTION_COLS,
    collateral_figure,
    collateral_map,
    filter_questions,
    generations_side_by_side,
    mia_figure,
    per_question,
    preserved_probes,
)
from hdsu_core.dashboard.runs import (
    DTYPE_OPTIONS,
    KEY_SETTINGS,
    dataset_label,
    elapsed_s,
    headline,
    key_settings,
    latest_runs_table,
    metric_cards,
    run_label,
    run_procedure,
    runs_table,
)
from hdsu_core.dashboard.tree import (
    LARGE_HIERARCHY,
    clean_selection,
    concept_details,
    concept_from_event,
    concept_options,
    hierarchy_figure,
    hierarchy_key,
    selection_roles,
    terms_frame,
    terms_from_frame,
    toggle_selection,
    tree_arrays,
    violations_table,
)

__all__ = [
    "DTYPE_OPTIONS",
    "FORGET",
    "FORGET_LIGHT",
    "GOOD",
    "KEY_SETTINGS",
    "LARGE_HIERARCHY",
    "LEVEL_COLORS",
    "PRESERVED",
    "PRESERVED_LIGHT",
    "QUESTION_COLS",
    "STATUS_ICONS",
    "clean_selection",
    "collateral_figure",
    "collateral_map",
    "collateral_table",
    "concept_details",
    "concept_from_event",
    "concept_item_counts",
    "concept_options",
    "dataset_choices",
    "dataset_label",
    "elapsed_s",
    "filter_questions",
    "generations_side_by_side",
    "headline",
    "hierarchy_figure",
    "hierarchy_key",
    "key_settings",
    "latest_runs_table",
    "metric_cards",
    "mia_figure",
    "per_question",
    "preserved_probes",
    "run_label",
    "run_procedure",
    "runs_table",
    "selection_roles",
    "spec_mtime",
    "split_table",
    "split_totals",
    "tag_counts",
    "terms_frame",
    "terms_from_frame",
    "toggle_selection",
    "tree_arrays",
    "violations_table",
]

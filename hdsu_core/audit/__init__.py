"""HTML / PDF audit reports of one unlearning run.

``report_context`` gathers everything a reviewer needs from the store (who / when / what, the
selected concepts with their hierarchy paths, data counts, the metrics with plain-language
explanations, a per-concept collateral map, example probes, generation probes and the run's audit
trail) as plain, JSON-serialisable values, plus three inline SVG charts made with matplotlib.
``build_html`` renders it with ``templates/audit.html.j2``; ``build_pdf`` converts that HTML with
WeasyPrint. Both record an ``export_report`` audit event.

Integrity: ``sha256`` is the SHA-256 of the canonical JSON of the report *content* (everything
in the context except the generation timestamp, the report id, the hash itself and the charts,
which are drawn from that content). Exports of a report are logged in the audit trail but are not
listed inside reports, so exporting an unchanged run again yields the same content hash and the
same report id (``AR-`` + the first 16 hex digits of the hash); only "generated at" differs.

This package never imports streamlit (nor pyplot: charts use ``matplotlib.figure.Figure``
directly with the SVG canvas, so no global backend is touched).

Modules: ``context`` (report_context), ``sections`` (hierarchy, collateral tables, examples,
generations, audit trail), ``metrics_table``, ``verdict`` (TARGETS), ``procedure`` (how a run
went, also shown on the Runs page), ``charts``, ``content`` (JSON values, content hash) and
``render`` (HTML, PDF, export events).
"""

from hdsu_core.audit.charts import MAX_CHART_CONCEPTS
from hdsu_core.audit.content import content_sha256
from hdsu_core.audit.context import report_context
from hdsu_core.audit.procedure import STOP_REASONS, procedure_rows, run_info
from hdsu_core.audit.render import TEMPLATE_DIR, TEMPLATE_NAME, build_html, build_pdf, record_download, render_html
from hdsu_core.audit.sections import N_EXAMPLE_PROBES
from hdsu_core.audit.verdict import TARGETS

__all__ = [
    "MAX_CHART_CONCEPTS",
    "N_EXAMPLE_PROBES",
    "STOP_REASONS",
    "TARGETS",
    "TEMPLATE_DIR",
    "TEMPLATE_NAME",
    "build_html",
    "build_pdf",
    "content_sha256",
    "procedure_rows",
    "record_download",
    "render_html",
    "report_context",
    "run_info",
]

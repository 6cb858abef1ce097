"""The report as HTML (``templates/audit.html.j2``) and as PDF (WeasyPrint), and the audit events
that record its exports."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import jinja2
from markupsafe import Markup

from hdsu_core.audit.context import report_context
from hdsu_core.hierarchy import Hierarchy

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"  # hdsu_core/templates
TEMPLATE_NAME = "audit.html.j2"


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2", "xml"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(ctx: dict) -> str:
    """Render a context from :func:`report_context` (no store access, no audit event)."""
    css_path = TEMPLATE_DIR / "audit.css"
    css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""
    charts = {k: (Markup(v) if v else None) for k, v in ctx["charts"].items()}  # our own SVG
    return _env().get_template(TEMPLATE_NAME).render(ctx=ctx, charts=charts, css=Markup(css))


def _log_export(store, actor: str, run_id: str, file_format: str, ctx: dict) -> None:
    details = {"format": file_format, "sha256": ctx["sha256"], "report_id": ctx["report_id"]}
    store.log_event(actor, "export_report", run_id, details)


def build_html(
    store,
    run_id: str,
    hierarchy: Hierarchy | None = None,
    *,
    actor: str = "system",
    now: _dt.datetime | None = None,
    log: bool = True,
) -> str:
    """The audit report as a standalone HTML document; logs ``export_report`` (format html)
    unless ``log=False`` (previews)."""
    ctx = report_context(store, run_id, hierarchy, now=now)
    html = render_html(ctx)
    if log:
        _log_export(store, actor, run_id, "html", ctx)
    return html


def build_pdf(
    store,
    run_id: str,
    hierarchy: Hierarchy | None = None,
    *,
    actor: str = "system",
    now: _dt.datetime | None = None,
    log: bool = True,
) -> bytes:
    """The audit report as PDF bytes (WeasyPrint); the PDF title carries the run id. Logs
    ``export_report`` (format pdf) unless ``log=False``."""
    from weasyprint import HTML  # lazy: heavy, needs system libraries; only PDF exports load it

    ctx = report_context(store, run_id, hierarchy, now=now)
    pdf = HTML(string=render_html(ctx), base_url=str(TEMPLATE_DIR)).write_pdf()
    if log:
        _log_export(store, actor, run_id, "pdf", ctx)
    return pdf


def record_download(store, run_id: str, file_format: str, actor: str) -> None:
    """Record that a report prepared in the dashboard was downloaded (an ``export_report`` event)."""
    store.log_event(actor, "export_report", run_id, {"format": file_format, "via": "dashboard"})

"""Colours and status labels shared by the dashboard's figures and tables: forget = red/orange,
preserved = blue/green, hierarchy levels = calm blues/teals."""

from __future__ import annotations

from hdsu_core.store import RunStatus

FORGET = "#d9480f"  # selected concept
FORGET_LIGHT = "#ff922b"  # descendant of a selected concept
PRESERVED = "#1c7ed6"
PRESERVED_LIGHT = "#d0ebff"
GOOD = "#2f9e44"
LEVEL_COLORS = {1: "#0b7285", 2: "#1098ad", 3: "#66d9e8", 4: "#c5f6fa"}
STATUS_ICONS = {
    RunStatus.QUEUED: "⏳ queued",
    RunStatus.RUNNING: "▶️ running",
    RunStatus.DONE: "✅ done",
    RunStatus.FAILED: "❌ failed",
    RunStatus.CANCELLED: "⏹️ cancelled",
}

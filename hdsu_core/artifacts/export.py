"""Hand the unlearned model out: a Hugging Face directory (``save_pretrained``: loads with no HDSU
code), a GGUF file, or a zip of the directory for a download. Every write is atomic."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

from hdsu_core.artifacts.gguf_export import write_gguf
from hdsu_core.models import ModelBundle, save_model

FORMATS = ("hf", "gguf")


def export_hf(bundle: ModelBundle, out: str | Path, meta: dict | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, bundle.tokenizer, out, {**bundle.meta, **(meta or {})})
    return out


def export_gguf(bundle: ModelBundle, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        out = out / f"{bundle.name}.gguf" if out.is_dir() else out.with_suffix(".gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_gguf(bundle.model, bundle.tokenizer, tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export(bundle: ModelBundle, fmt: str, out: str | Path, meta: dict | None = None) -> Path:
    if fmt == "hf":
        return export_hf(bundle, out, meta)
    if fmt == "gguf":
        return export_gguf(bundle, out)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def hf_zip_bytes(bundle: ModelBundle, meta: dict | None = None) -> bytes:
    """The Hugging Face directory as a zip (what the dashboard's download button hands out)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = export_hf(bundle, Path(tmp) / "model", meta)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(root.iterdir()):
                z.write(f, f"{bundle.name}/{f.name}")
    return buf.getvalue()

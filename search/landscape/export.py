"""The ``hpsearch landscape`` command: refresh a study's figures, write them to a page.

:func:`export_landscape` is what the command does (``search.landscape.server`` wires it in); it
refreshes the figures in the study (:mod:`search.landscape.refresh`), then writes them to one
self-contained HTML page (:func:`write_html`) and, where kaleido works, PNGs
(:func:`write_pngs`).

The landscape is four modules, one job each: :mod:`search.landscape.figures` (curves to figures,
pure), :mod:`search.landscape.curves` (trial histories to curves, read through
:func:`storage.histories.trial_records`), :mod:`search.landscape.refresh` (storing the figures in the
study, rate-limited) and this one.
"""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["export_landscape", "write_html", "write_pngs"]


# ---------------------------------------------------------------------------------------
# A page of their own


def write_html(figures: dict, path, *, title: str) -> Path:
    """Write ``figures`` to one self-contained HTML page (Plotly's JavaScript inlined).

    Returns:
        The path written.
    """
    path = Path(path)
    parts = []
    for i, (fid, fig) in enumerate(figures.items()):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=fid,
                          default_height="520px", config={"displaylogo": False, "responsive": True})
        parts.append(f'<section class="figure">{div}</section>')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
main {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1em; }}
.figure {{ border: 1px solid #ddd; border-radius: 6px; padding: 4px; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Loss landscape built by <code>hpsearch landscape</code> from every complete and pruned trial's per-epoch history.
Heatmaps: loss over the study's parameter (the learning rate, for the recipe) and epoch (dark is low). Learning curves: one
line per trial, coloured by that parameter; the recipe's rates are the thick lines. Last: the best value of the study's
objective each trial reached; the star is the best trial.</p>
<main>
{chr(10).join(parts)}
</main></body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_pngs(figures: dict, path) -> tuple[list[Path], str | None]:
    """Write one PNG per figure next to ``path`` (``landscape-<id>.png``) if kaleido works.

    Returns:
        The files written, and why none were when none were (kaleido missing or failing).
    """
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return [], "no PNG renderer installed (pip install kaleido, which also needs Chrome)"
    path = Path(path)
    written = []
    try:
        for fid, fig in figures.items():
            out = path.with_name(f"{path.stem}-{fid.removeprefix('hpsearch-')}.png")
            fig.write_image(out, width=900, height=560)
            written.append(out)
    except Exception as e:  # kaleido's Chrome may be missing or fail to start
        return written, f"PNG export failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return written, None


def _check_out(out) -> None:
    """Refuse an ``--out`` that cannot be written, before anything is refreshed or written."""
    import os

    from search.errors import ConfigError

    path = Path(out).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"--out {out} is a directory: give a file name such as {path / 'landscape.html'}")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {parent} does not exist: create it (mkdir -p {parent}) or choose another path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--out {out} is not writable: choose a writable path")


def export_landscape(storage_flag: str | None, study_name: str | None, out="landscape.html", *, err=None) -> Path:
    """What ``hpsearch landscape`` does: refresh the figures in the study, write them to a page.

    Also writes one PNG per figure next to the page where kaleido is installed.

    Args:
        storage_flag: the ``--storage`` flag (None: ``OPTUNA_STORAGE``, else the embedded
            PostgreSQL).
        study_name: the study to draw (None: the recipe's, or the storage's only study,
            :func:`search.study.config.pick_study`).
        out: the HTML file to write.
        err: where progress and notes go (stderr).

    Returns:
        The HTML file written.

    Raises:
        StudyNotFoundError: no study of that name.
        ConfigError: it has no trial with a history yet, or ``out`` cannot be written.
    """
    import sys

    import optuna

    from search.errors import ConfigError
    from search.landscape.refresh import refresh_landscape
    from search.study.create import find_study
    from storage import open_storage, resolve_storage_url

    err = err or sys.stderr
    _check_out(out)  # before the figures are refreshed in the study (issue 15)
    resolved = resolve_storage_url(storage_flag)
    storage = open_storage(resolved, heartbeat=False)
    try:
        study_name = find_study(storage.engine, study_name, resolved.masked)
        study = optuna.load_study(study_name=study_name, storage=storage)
        result = refresh_landscape(study, storage)
        if not result.refreshed:
            raise ConfigError(f"study {study_name!r} has no complete or pruned trial with a history yet: run some trials first (hpsearch run --study {study_name})")
        print(f"refreshed the landscape of study {study_name!r} in {resolved.masked}: {result.trials} trials, "
              f"{len(result.figures)} figures ({result.bytes / 1e3:.0f} kB) in {result.seconds:.1f} s", file=err)
        try:
            path = write_html(result.figures, out, title=f"Loss landscape of study {study_name}")
        except OSError as e:
            raise ConfigError(f"cannot write --out {out} ({e.strerror or e}): choose a writable path") from None
        pngs, why = write_pngs(result.figures, path)
        for png in pngs:
            print(f"wrote {png}", file=err)
        if why:
            print(f"no PNG: {why}", file=err)
        return path
    finally:
        storage.engine.dispose()

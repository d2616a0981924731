"""A study's optuna-dashboard note, which links to the study's live loss landscape.

The link is written when a study is created (:func:`search.study.create.open_study`) and when
the dashboard starts (:mod:`search.landscape.server`); the page behind it is served by
:mod:`search.landscape.live`, whose routes start with :data:`LIVE_PREFIX`.
"""

from __future__ import annotations

__all__ = ["LIVE_PREFIX", "link_live_page", "live_path"]

LIVE_PREFIX = "/live"


def live_path(study_id: int) -> str:
    """The path of a study's live page."""
    return f"{LIVE_PREFIX}/studies/{int(study_id)}"


def link_live_page(storage, study_id: int) -> bool:
    """Put a link to the study's live page in its optuna-dashboard note; True if it wrote.

    A study without a note gets one; a note without the link gets it as a last line (the
    rest of the note is kept as the user wrote it).
    """
    from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version

    from storage.histories import study_system_attr

    link = f"[Live loss landscape]({live_path(study_id)}): the figures as workers train, updated every second."
    if study_system_attr(storage.engine, study_id, "dashboard:note_ver") is None:
        save_note_with_version(storage, study_id, None, 1, link)
        return True
    note = get_note_from_system_attrs(storage.get_study_system_attrs(study_id), None)
    if live_path(study_id) + ")" in note["body"]:
        return False
    save_note_with_version(storage, study_id, None, int(note["version"]) + 1, f"{note['body'].rstrip()}\n\n{link}")
    return True

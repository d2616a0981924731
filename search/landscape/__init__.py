"""The loss landscape: figures, curves, their refresh and export, the live page and feed, and the dashboard server and its access rules."""

__all__ = ["access", "curves", "export", "figures", "live", "refresh", "server"]

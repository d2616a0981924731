"""The loss landscape: figures, curves, their refresh and export, the live page and feed, and the dashboard server."""

__all__ = ["curves", "export", "figures", "live", "refresh", "server"]

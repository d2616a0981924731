"""Workers: the claim-train-tell loop, the launcher of many, progress lines, and how a trial ended."""

__all__ = ["launch", "limits", "outcome", "progress", "worker"]

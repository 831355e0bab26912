"""Patch heatmap dock widget (being built)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label


class HeatmapWidget(Container):
    """Patch heatmap (placeholder until its implementation lands)."""

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer = viewer
        self.append(Label(value="Patch heatmap: coming soon"))

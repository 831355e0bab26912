"""Stain normalization dock widget (being built)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label


class StainWidget(Container):
    """Stain normalization (placeholder until its implementation lands)."""

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer = viewer
        self.append(Label(value="Stain normalization: coming soon"))

"""The review queue's keyboard shortcuts, bound on the viewer and released with the widget.

napari >= 0.5 dispatches a key to the active layer's keymap first, then the viewer's
(``viewer.bind_key``); npe2's ``keybindings`` contribution is not wired into napari (NAP-7),
so the widget binds on its own viewer and gives the keys back when it closes. The keys
avoid what napari's Labels and Image layers use (``e``/``p``/``f`` are the labels brush
modes, so edit, previous and flag take Shift), so they work while the correction brush is
active:

====================  ==========================================================
``n`` / ``Shift-N``   next / previous region
``a``                 accept the region (saves a correction if one was painted)
``Shift-F``           flag the region (ask someone else)
``Shift-E``           edit: paint a correction over the region
====================  ==========================================================

(``a`` also selects all points/shapes when such a layer is active; the review keeps the
slide or the correction layer active.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["KEYS", "KeyBindings"]

#: action -> key (napari's notation)
KEYS: dict[str, str] = {"next": "n", "previous": "Shift-N", "accept": "a", "flag": "Shift-F",
                        "edit": "Shift-E"}


class KeyBindings:
    """Bind ``actions`` (action name -> callable) on ``viewer``; :meth:`release` undoes it.

    A key the viewer already had bound (another plugin's) is restored on release.
    """

    def __init__(self, viewer: Any, actions: dict[str, Callable[[], Any]]) -> None:
        self._viewer = viewer
        self._bound: dict[str, Any] = {}
        self._previous: dict[str, Any] = {}
        for name, key in KEYS.items():
            func = actions.get(name)
            if func is None:
                continue

            def _call(_viewer: Any, func: Callable[[], Any] = func) -> None:
                func()

            _call.__doc__ = f"napari-histo review: {name}"
            self._previous[key] = viewer.bind_key(key, _call, overwrite=True)
            self._bound[key] = _call

    @property
    def active(self) -> bool:
        """True while the keys are bound."""
        return bool(self._bound)

    def release(self) -> None:
        """Unbind the keys (restoring what was there before); safe to call twice."""
        keymap = getattr(self._viewer, "keymap", {})
        for key, func in list(self._bound.items()):
            try:
                from napari.utils.key_bindings import coerce_keybinding

                still_ours = keymap.get(coerce_keybinding(key)) is func
                if still_ours:
                    self._viewer.bind_key(key, None)
                    previous = self._previous.get(key)
                    if previous is not None:
                        self._viewer.bind_key(key, previous, overwrite=True)
            except (KeyError, RuntimeError, ValueError):
                pass
        self._bound.clear()
        self._previous.clear()

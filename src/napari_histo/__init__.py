"""napari-histo: computational pathology in napari.

Kept import-free on purpose: npe2 imports this package before every command.
"""

__version__ = "0.1.0"

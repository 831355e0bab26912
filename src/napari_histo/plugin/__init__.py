"""napari adapters: the only package that imports napari, magicgui or Qt."""

"""``python -m napari_histo.cli``."""

import sys

from napari_histo.cli import main

sys.exit(main())

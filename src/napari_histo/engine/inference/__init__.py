"""Tiled, blended, tissue-masked, streamed inference over slides, regions and arrays.

Public API: :func:`predict_array`, :func:`predict_slide`, :func:`predict_heatmap`,
:func:`output_geometry`, :class:`InferenceConfig`, :class:`PredictionResult`,
:func:`result_from_store`, :func:`is_complete`. Nothing here imports napari or Qt.
"""

from napari_histo.engine.inference.config import InferenceConfig
from napari_histo.engine.inference.predict import (
    PredictionResult,
    output_geometry,
    predict_array,
    predict_heatmap,
    predict_slide,
    result_from_store,
)
from napari_histo.engine.inference.writer import is_complete, open_prediction

__all__ = [
    "InferenceConfig",
    "PredictionResult",
    "is_complete",
    "open_prediction",
    "output_geometry",
    "predict_array",
    "predict_heatmap",
    "predict_slide",
    "result_from_store",
]

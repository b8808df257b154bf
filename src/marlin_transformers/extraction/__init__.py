"""Features out: turn videos into one feature per window, and run that over many files.

`extractor` holds the per-video work (`MarlinFeatureExtractor`, marlin-pytorch compatible `extract_video` /
`extract_features`); `job` the corpus job behind `marlin extract` (input discovery, manifest, atomic writes,
resume, several processes).
"""

from .extractor import (
    DTYPES,
    MarlinFeatureExtractor,
    VideoFeatures,
    extract_features,
    extract_video,
)

__all__ = ["DTYPES", "MarlinFeatureExtractor", "VideoFeatures", "extract_features", "extract_video"]

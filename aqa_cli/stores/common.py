"""What both stores share, importable without numpy or h5py (the command line reads its defaults): their
format names and the frame compressions."""

from __future__ import annotations

VIDEO_STORE_FORMAT = "aqa-video-store"
FEATURE_STORE_FORMAT = "aqa-feature-store"
COMPRESSIONS = ("none", "lzf", "gzip")
DEFAULT_COMPRESSION = "none"  # video frames barely compress losslessly; see docs/FORMAT.md

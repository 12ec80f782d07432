"""The tests, mirroring the layers; `tests.helpers` makes real fixture files (encoded videos, frame trees)."""

"""Layer 2: the on-disk HDF5 stores: the video store (format, writer, reader, verification, merge) and the
feature store. Torch-free."""

"""A registry on disk: its paths (Registry), every git call, every DVC call, and caches keyed on git blobs."""

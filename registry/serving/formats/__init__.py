"""Version folders in the layouts other model servers load: `.mar` (TorchServe), the V2 model repository, MLflow pyfunc, KServe.

Each builder reads a verified version folder (card.yaml, the artifacts, the entrypoint)
and writes only below the output it is given; the folder itself is never changed.
"""

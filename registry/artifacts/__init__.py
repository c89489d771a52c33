"""Model files: what they are, whether loading them can run code, their checks and conversion.

`sniff` and `identify` say what a file's bytes are, `scan` whether loading it can run
code, `safetensors` and `onnx` are the format gate's checks, `convert` turns pickled
checkpoints into safetensors.
"""

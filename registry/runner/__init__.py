"""Running a model's own code (predict.py) in a confined child process: smoke tests, latency and metrics."""

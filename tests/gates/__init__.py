"""Tests of the pull-request gates: one module per gate (tests/gates/test_<gate>.py)."""

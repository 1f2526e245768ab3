"""pytest configuration shared by the test modules."""

# run as a script by test_gate_ddp.py (it puts tests/ on sys.path): not a module to collect
collect_ignore = ["helpers_gate_ddp.py"]

"""voiceapp benchmarks: `python -m bench [--quick]` starts a private local stack, runs every scenario and
writes report.json, report.md and PNG plots (see bench/__main__.py)."""

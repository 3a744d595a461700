"""The five gates: each measures, judges (pure functions returning Checks) and returns a Verdict."""

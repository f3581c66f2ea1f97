"""The typed records: a step's result (steps) and a run's, from conversion to summary, registry and report (run)."""

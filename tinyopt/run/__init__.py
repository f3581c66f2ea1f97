"""Assembling a run: the plan tree, typed records, measured figures, device fit, picks, the summary and report."""

"""`tinyopt search`: the draws, the front and the picks (space), and the search report."""

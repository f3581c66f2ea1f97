"""Foundations every layer uses: user errors, atomic files, the project layout, lineage, the console, server health."""

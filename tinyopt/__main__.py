# `python -m tinyopt` runs the command, which lives on top of the library (cli/), not in it.
from cli import main

# Guarded: Dask's worker processes re-import the main module, and must not run the CLI again.
if __name__ == "__main__":
    main()

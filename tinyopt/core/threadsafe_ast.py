"""One lock around `ast.parse` for the whole process.

CPython 3.11 keeps the AST converter's recursion depth in interpreter-wide state (CPython gh-106905,
fixed in 3.13 and later 3.12 releases only): two threads parsing at once fail with "SystemError: AST
constructor recursion depth mismatch". numpy reads every .npy header with `ast.literal_eval`, and the
threads runner loads datasets, traces tf.functions and hashes step code in parallel, so the pipeline
serializes every `ast.parse` (literal_eval goes through it too).
"""

import ast
import functools
import sys
import threading

_LOCK = threading.RLock()  # re-entrant: a finalizer run by the garbage collector may parse too


def serialize_ast_parse() -> None:
    """Make `ast.parse` take the process-wide lock; a no-op where CPython is fixed or it is done."""
    if sys.version_info >= (3, 13) or getattr(ast.parse, "serialized", False):
        return
    unlocked = ast.parse

    @functools.wraps(unlocked)
    def parse(*args, **kwargs):
        with _LOCK:
            return unlocked(*args, **kwargs)

    parse.serialized = True
    ast.parse = parse

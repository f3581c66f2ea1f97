"""Reference models: the .tflite files a run is compared against, measured in the same harness."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core.errors import UserError
from tinyopt.params import ReferenceParams
from tinyopt.runtimes import litert


def find_references(settings: ReferenceParams, dataset: str, input_shape: list[int]) -> tuple[list[Path], str | None]:
    """The reference .tflite files that can be measured on this run's data, and a note on what was
    left out and why (None when nothing was)."""
    if not settings.dir:
        return [], "no reference directory configured (reference.dir is null)"
    directory = Path(settings.dir)
    if not directory.is_dir():
        return [], f"reference models skipped: {directory} does not exist"
    if settings.dataset != dataset:
        return [], (
            f"reference models skipped: they were trained on {settings.dataset}, this run's dataset is {dataset}"
        )
    usable, refused = [], []
    for path in sorted(directory.glob("*.tflite")):
        try:
            shape = list(litert.load_interpreter(path).get_input_details()[0]["shape"][1:])
        except UserError as exc:
            refused.append(f"{path.name} ({exc})")
            continue
        if [d for d in shape if d != 1] != [d for d in input_shape if d != 1]:
            refused.append(f"{path.name} (input {shape}, data {input_shape})")
            continue
        usable.append(path)
    note = f"left out: {'; '.join(refused)}" if refused else None
    if not usable:
        note = f"reference models skipped: no usable .tflite in {directory}" + (f"; {note}" if note else "")
    return usable, note

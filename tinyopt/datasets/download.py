"""A built-in IDX dataset's files gathered into a directory: copied from its local copy (the Debian
package) or downloaded from the first mirror that answers."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from tinyopt.core.errors import UserError
from tinyopt.datasets.idx import IDX_DATASETS


def download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out)


def gather_idx(name: str, staging: Path) -> None:
    spec = IDX_DATASETS[name]
    local = Path(spec.local_dir) if spec.local_dir else None
    for file_name in spec.files.values():
        if local and (local / file_name).is_file():
            shutil.copyfile(local / file_name, staging / file_name)
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                download(mirror + file_name, staging / file_name)
                break
            except OSError as exc:
                errors.append(f"{mirror}: {exc}")
        else:
            hint = (
                f"install the Debian package {spec.debian_package} (apt-get install {spec.debian_package}) or "
                if spec.debian_package
                else ""
            )
            raise UserError(
                f"cannot get {name} file {file_name}: not found locally and no mirror answered; "
                f"{hint}connect this machine to the internet and run `tinyopt fetch` again"
            )

"""Writing a benchmark's result: ``write(path, result)`` makes the folder, writes indented JSON with a final
newline, and says where (the other scripts still do it inline)."""

from __future__ import annotations

import json
from pathlib import Path


def write(path: Path, result: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")

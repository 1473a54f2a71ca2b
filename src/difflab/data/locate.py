"""Where named datasets (mnist, cifar10) are looked for when no path is given.

Search order, first existing folder wins:

1. ``../shared/data`` relative to the current directory;
2. ``../shared/data`` relative to the repository root (source checkouts only);
3. the user data dir: ``$DIFFLAB_DATA_DIR`` if set, else ``~/.cache/difflab/data``.

Each named dataset lives in a subfolder (``mnist/``, ``cifar10/``). Nothing is ever
downloaded: a missing dataset is a DataError listing the folders searched.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "DIFFLAB_DATA_DIR"


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[3]  # src/difflab/data/locate.py -> repo root
    return root if (root / "pyproject.toml").is_file() else None


def user_data_dir() -> Path:
    """``$DIFFLAB_DATA_DIR`` or ``~/.cache/difflab/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "difflab" / "data"


def default_data_dirs() -> list[Path]:
    """Candidate data roots in search order (they need not exist)."""
    dirs = [Path.cwd() / ".." / "shared" / "data"]
    root = _repo_root()
    if root is not None:
        dirs.append(root / ".." / "shared" / "data")
    dirs.append(user_data_dir())
    return [d.resolve() for d in dirs]


def candidate_dirs(path: str | os.PathLike | None, subdir: str) -> list[Path]:
    """Folders that may hold dataset ``subdir``: ``path`` and ``path/subdir`` if given, else the defaults."""
    if path is not None:
        p = Path(path).expanduser()
        return [p, p / subdir]
    return [d / subdir for d in default_data_dirs()]


def how_to_provide(name: str, subdir: str) -> str:
    """The fix-it half of a 'dataset not found' message."""
    return (
        f"pass path= to the folder holding the {name} files, or put them in "
        f"<data root>/{subdir}/ where <data root> is ../shared/data or ${DATA_DIR_ENV}"
    )

"""MkDocs hooks: the repository's ``notebooks/*.ipynb`` as guides.

The notebooks live at the top of the repository (where users find and run them), outside
``docs_dir``. ``on_files`` adds each of them to the site's files as
``notebooks/<name>.ipynb``, before mkdocs-jupyter turns ``.ipynb`` files into pages, so
``mkdocs.yml`` lists them in ``nav`` as ``notebooks/01_quickstart.ipynb``: no copies, no
symbolic links.

A notebook listed in ``nav`` but missing from ``notebooks/`` is a missing page, which fails
the strict build like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

NOTEBOOKS = "notebooks"


@event_priority(100)  # before mkdocs-jupyter's on_files (default priority 0)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    repo = Path(config.config_file_path).parent
    for nb in sorted((repo / NOTEBOOKS).glob("*.ipynb")):
        uri = f"{NOTEBOOKS}/{nb.name}"
        if files.get_file_from_path(uri) is None:
            # A plain File whose source folder is the repository root (not File.generated:
            # mkdocs-jupyter's wrapper needs src_dir to find the notebook on disk).
            files.append(File(uri, str(repo), config.site_dir, config.use_directory_urls))
    return files


def on_serve(server, config: MkDocsConfig, builder):  # mkdocs calls it with these names
    """``mkdocs serve``: rebuild when a notebook changes (if the folder exists)."""
    root = Path(config.config_file_path).parent / NOTEBOOKS
    if root.is_dir():
        server.watch(str(root))
    return server

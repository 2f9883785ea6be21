"""MkDocs hooks: the repository's ``notebooks/*.ipynb`` as guides.

The notebooks live at the top of the repository (where users find and run them), outside
``docs_dir``. ``on_files`` adds each of them to the site's files as
``notebooks/<name>.ipynb``, before mkdocs-jupyter turns ``.ipynb`` files into pages, so
``mkdocs.yml`` lists them in ``nav`` as ``notebooks/01_quickstart.ipynb``: no copies, no
symbolic links.

``on_config`` drops from ``nav`` the notebooks that are not in ``notebooks/`` (yet), with
an INFO message, so a guide listed before it is committed does not fail the strict build;
every other missing page still does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

NOTEBOOKS = "notebooks"
log = logging.getLogger(f"mkdocs.hooks.{NOTEBOOKS}")


def _prune(nav: Any, repo: Path) -> Any:
    """``nav`` without the entries naming a missing ``notebooks/*.ipynb`` (and emptied sections)."""
    if isinstance(nav, list):
        kept = [_prune(entry, repo) for entry in nav]
        return [entry for entry in kept if entry is not None]
    if isinstance(nav, dict):
        kept_items = {title: _prune(value, repo) for title, value in nav.items()}
        kept_items = {t: v for t, v in kept_items.items() if v is not None and v != []}
        return kept_items or None
    if isinstance(nav, str) and nav.startswith(f"{NOTEBOOKS}/") and nav.endswith(".ipynb"):
        if not (repo / nav).is_file():
            log.info("nav: %s is not in the repository (yet); left out", nav)
            return None
    return nav


@event_priority(100)
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    if config.nav is not None:
        config.nav = _prune(config.nav, Path(config.config_file_path).parent)
    return config


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

# Jupyter configuration of this repository; `make demo` adds this folder to JUPYTER_CONFIG_PATH.
# Saving a notebook from Jupyter cleans it first as nbdev_clean does (execution counts and metadata other than cell
# tags removed; outputs kept), so a saved notebook passes `make test`'s nbdev_clean check; settings.ini's
# `jupyter_hooks = True` switches it on. It is nbdev's own hook (`nbdev.clean.clean_jupyter`, the one
# `nbdev_install_hooks` writes into ~/.jupyter) with two fixes:
# - Jupyter gives `path` relative to the server's root (`nbs/` under `make demo`), not to the working directory:
#   nbdev's hook looked for the file from the wrong folder (FileNotFoundError on every save and autosave).
# - The cells' `trusted` flag is kept: JupyterLab sends it, and right after this hook Jupyter reads it to decide
#   whether to sign the notebook (a notebook you ran is signed, one from elsewhere is not). nbdev's hook removed it,
#   so every save was unsigned and, after a page reload, the demo's widget came back as its text (`VBox(...)`).
#   The flag never reaches the file (nbformat strips it when writing), so the saved notebook stays clean.
import warnings
from pathlib import Path


def nbdev_clean_jupyter(model, path, contents_manager, **kwargs):
    try:
        from nbdev.clean import clean_nb
        from nbdev.config import get_config
    except ModuleNotFoundError: return
    if model.get('type') != 'notebook' or model['content'].get('nbformat') != 4: return
    get_config.cache_clear()  # settings.ini edits count without restarting Jupyter
    cfg = get_config(path=Path(contents_manager.root_dir, path))
    if not cfg.jupyter_hooks: return
    clean_nb(model['content'], cfg.clear_all, cfg.get('allowed_metadata_keys').split(),
             cfg.get('allowed_cell_metadata_keys').split() + ['trusted'], cfg.clean_ids)


c.ContentsManager.pre_save_hook = nbdev_clean_jupyter
# At start Jupyter sets the hook from this file twice (seen with jupyter_server 2.21), and setting it again warns
# "Overriding existing pre_save_hook (nbdev_clean_jupyter) with a new one (nbdev_clean_jupyter)": the same
# hook, so that one message is silenced (a hook of another name replaced here still warns).
warnings.filterwarnings('ignore', message=r'Overriding existing pre_save_hook \(nbdev_clean_jupyter\) with a new one \(nbdev_clean_jupyter\)')

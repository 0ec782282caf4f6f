# Jupyter configuration of this repository; `make demo` adds this folder to JUPYTER_CONFIG_PATH.
# Saving a notebook from Jupyter cleans it first with nbdev_clean (execution counts and metadata other than
# cell tags removed; outputs kept), so a saved notebook passes `make test`'s nbdev_clean check. It is nbdev's
# own hook, the one `nbdev_install_hooks` writes into ~/.jupyter; settings.ini's `jupyter_hooks = True`
# switches it on for this repository.
def nbdev_clean_jupyter(**kwargs):
    try: from nbdev.clean import clean_jupyter
    except ModuleNotFoundError: return
    clean_jupyter(**kwargs)

c.ContentsManager.pre_save_hook = nbdev_clean_jupyter

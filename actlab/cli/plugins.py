"""Make Hydra find actlab's sweepers (hydra_plugins.actlab_sweepers) however actlab is installed.

Hydra 1.3 finds plugins only by listing `hydra_plugins.__path__` with pkgutil. A wheel or a
source checkout puts a real `hydra_plugins/actlab_sweepers` directory on that path; a PEP 660
editable install (`pip install -e .`) does not: setuptools' import hook resolves the package
when it is imported, but pkgutil cannot list it, so Hydra never imports it and neither the
sweeper classes nor their config nodes (`hydra/sweeper=actlab_optuna`, actlab's `basic`) exist.

register_plugins() does what that scan would have done: it imports every module of the package
from the directory the import system resolves it to, and registers the plugin classes with
Hydra's public `Plugins.instance().register`. Modules already imported and classes already
registered (by Hydra's scan, by Hydra 1.4's entry points, by an earlier call) are left as they
are, so the call is harmless where Hydra finds the plugins itself, and can be repeated.
"""

import importlib
import importlib.util
import inspect
import pkgutil

PACKAGE = "hydra_plugins.actlab_sweepers"


def register_plugins() -> None:
    """Import actlab's Hydra plugin modules and register their plugins unless Hydra did already."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.plugin import Plugin

    # Plugins.instance() runs Hydra's scan on first use, and the scan must come first: it
    # re-executes Hydra's core plugin modules, which stores Hydra's own `basic` sweeper config
    # again; actlab's config.py, imported below, has to store its `basic` after that to replace
    # it, as it does when the scan itself imports actlab's package (after the core plugins).
    # So this must also run before anything else imports actlab's plugin modules.
    plugins = Plugins.instance()
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ModuleNotFoundError:  # not even the namespace package hydra_plugins exists
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: Hydra reports the unknown sweeper itself
    # by Hydra's registry key: register() is not documented to skip a class it holds already
    known = {f"{c.__module__}.{c.__name__}" for c in plugins.discover(Plugin)}
    # The spec holds the package's real directory, which pkgutil can list even where it cannot
    # list the editable hook behind `hydra_plugins.__path__`.
    for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=PACKAGE + ".",
                                      onerror=lambda name: None):
        if info.name.rpartition(".")[2].startswith("_"):
            continue  # Hydra's scan skips private modules too
        module = importlib.import_module(info.name)  # runs config.py's ConfigStore registrations
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # only classes defined here: grid.py also imports Hydra's BasicSweeper
            if (issubclass(obj, Plugin) and not inspect.isabstract(obj)
                    and obj.__module__ == module.__name__
                    and f"{obj.__module__}.{obj.__name__}" not in known):
                plugins.register(obj)

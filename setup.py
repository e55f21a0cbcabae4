"""Packages and the dashboard mapping; every other setting lives in setup.cfg."""
from setuptools import find_namespace_packages, setup

# static/ (the dashboard) stays at the top of the checkout but ships as the package
# server.static, so an installed orq finds it through importlib.resources; setup.cfg
# cannot combine this mapping with `packages = find:`. Namespace discovery: a new folder
# of modules is packaged even before it gets an __init__.py.
PACKAGES = find_namespace_packages(include=["server", "server.*", "shell", "shell.*"],
                                   exclude=["*.__pycache__"])

# static/vendor/ (third-party files the dashboard loads) is listed too: data in a folder
# setuptools does not know as a package draws a warning at every build
setup(packages=[*PACKAGES, "server.static", "server.static.vendor"],
      package_dir={"server.static": "static"})

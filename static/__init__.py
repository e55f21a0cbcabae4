"""The dashboard's files: setup.py ships this folder as the package server.static, so an
installed orq (wheel or editable) finds them through importlib.resources."""

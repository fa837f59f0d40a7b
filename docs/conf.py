"""Sphinx configuration for the atasker docs."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "atasker"
author = "atasker developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = False

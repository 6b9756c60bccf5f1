"""Curation Workbench core: plain Python, no Textual imports outside workbench/app.py."""
__version__ = "0.1.0"

"""The ``rmd`` command-line tool: a thin layer over the core modules."""

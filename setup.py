"""pip install of the pure-Python core and the `rmd` tool (no ROS needed).

On a robot the package is built with colcon (CMakeLists.txt); this file
serves workstations that only create, sign, inspect or optimize bundles.
"""
from setuptools import setup

setup()

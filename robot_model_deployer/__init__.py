"""Perception model deployment for ROS 2 robots: a pure-Python core and thin nodes.

In a colcon install this package also holds the generated ``msg``/``srv``/
``action`` modules. Extending ``__path__`` lets a source checkout on
``sys.path`` (e.g. the working directory) still find them there.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

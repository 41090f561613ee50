"""Talking to a robot's manager from another machine or process over ROS 2 (``rmd robot``).

``client`` needs rclpy and this package's interfaces; ``command`` and
``main`` do not import it until a robot command runs, so ``rmd`` works
where ROS is missing and ``rmd robot`` then says so in one line.
"""

"""Deployment orchestration (no ROS): the deploy flow and its ports, blue/green switching, serving a model."""

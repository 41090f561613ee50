"""Deployment orchestration: blue/green switching and the deploy flow (no ROS)."""

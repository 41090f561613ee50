"""Fleet rollout through Mender: the ``rmd-model`` update module's logic and artifact building.

Nothing here imports rclpy: the module talks to the robot's manager through
the ``rmd robot`` command (robot_cli.py), so Mender's view of an update is
always the manager's store, read fresh in every state.
"""

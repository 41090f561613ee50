"""Start the model deployer: manager, two lifecycle perception nodes, shadow node, optional demo camera.

    ros2 launch robot_model_deployer deployer.launch.py \
        image_topic:=/camera/image_raw trust_dir:=/etc/robot/model_keys

The perception nodes subscribe to ``image_topic`` and publish on
``results_topic``; only the live one publishes. The shadow node runs a
candidate beside it. The manager configures and activates all three through
their lifecycle services, so no lifecycle manager is needed here.

Every node gets the Fast DDS profile ``config/fastdds_large_data.xml`` (argument
``fastdds_profile``; '' keeps Fast DDS's defaults): with the default 512 KiB
shared-memory segment a 640x480 camera frame goes over UDP loopback, where
frames are lost and late under load, and probation and the shadow gate were
measured (bench/bench_decisions.py) with the profile.

Nothing serves without the manager or a perception node, so when one of them
exits the whole graph is shut down, with the reason in launch's log; a launch
left running with only the shadow node would look alive to a supervisor. The
shadow node and the demo camera only say so when they exit: the live model
keeps serving without them.
"""
import logging
import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable, UnsetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

_logger = logging.getLogger("launch")  # launch's own logger: shown like its other messages, in its log too


def _require_params_file(context: LaunchContext) -> None:
    """launch_ros only warns about a missing parameter file and starts every node on its defaults."""
    path = LaunchConfiguration("params_file").perform(context)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params_file {path!r} is not a file: pass params_file:=<YAML with one "
                                "ros__parameters block per node>, or leave it out for config/deployer.yaml")


def _fastdds_profile(context: LaunchContext) -> list:
    """The profile for every node started after this; '' leaves Fast DDS on its defaults."""
    path = LaunchConfiguration("fastdds_profile").perform(context)
    if not path:
        return [UnsetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE")]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fastdds_profile {path!r} is not a file: pass a Fast DDS XML profile, or "
                                "fastdds_profile:='' for Fast DDS's defaults")
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", path)]


def _on_exit(node: Node, name: str, *, shut_down: bool, without: str) -> RegisterEventHandler:
    """When ``node`` exits outside a shutdown: log an error and, if ``shut_down``, stop the graph."""

    def exited(event: ProcessExited, context: LaunchContext):
        if context.is_shutdown:
            return None  # every node exits on Ctrl-C or a shutdown; nothing to say
        reason = f"{name} exited with code {event.returncode}: {without}"
        if not shut_down:
            _logger.error(f"{reason}; the rest keeps running")
            return None
        _logger.error(f"{reason}; shutting the model deployer down")
        return [EmitEvent(event=Shutdown(reason=reason))]

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=exited))


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("robot_model_deployer"))
    default_params = str(share / "config" / "deployer.yaml")
    default_profile = str(share / "config" / "fastdds_large_data.xml")
    params = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    # Typed on purpose: launch_ros reads an untyped substitution with YAML rules, so a bundle path
    # such as "/data/bundle #2" would lose everything after " #", and use_sim_time:=1 would reach
    # the node as an integer (rclpy then refuses it). With a type, the path stays a string and
    # use_sim_time accepts true/false/1/0 like IfCondition does.
    use_sim_time = {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}
    manager_overrides = {
        "initial_bundle": ParameterValue(LaunchConfiguration("initial_bundle"), value_type=str),
        "store_dir": ParameterValue(LaunchConfiguration("store_dir"), value_type=str),
        "trust_dir": ParameterValue(LaunchConfiguration("trust_dir"), value_type=str),
        "allow_unsigned": ParameterValue(LaunchConfiguration("allow_unsigned"), value_type=bool),
    }
    topics = [("image", LaunchConfiguration("image_topic")), ("results", LaunchConfiguration("results_topic"))]

    perception_names = ("perception_a", "perception_b")
    perception = [
        LifecycleNode(package="robot_model_deployer", executable="perception_node", name=name,
                      namespace=namespace, parameters=[params, use_sim_time], remappings=topics, output="screen")
        for name in perception_names
    ]
    shadow = LifecycleNode(package="robot_model_deployer", executable="shadow_node", name="shadow",
                           namespace=namespace, parameters=[params, use_sim_time], remappings=topics,
                           output="screen")
    manager = Node(package="robot_model_deployer", executable="manager_node", name="model_manager",
                   namespace=namespace, output="screen", remappings=topics,
                   parameters=[params, use_sim_time, manager_overrides])
    camera = Node(package="robot_model_deployer", executable="demo_camera_node", name="demo_camera",
                  namespace=namespace, parameters=[params, use_sim_time],
                  remappings=[("image", LaunchConfiguration("image_topic"))], output="screen",
                  condition=IfCondition(LaunchConfiguration("demo_camera")))

    nothing_serves = "nothing serves models without it"
    on_exit = [
        *(_on_exit(node, name, shut_down=True, without=nothing_serves)
          for node, name in zip(perception, perception_names)),
        _on_exit(manager, "model_manager", shut_down=True, without=nothing_serves),
        _on_exit(shadow, "shadow", shut_down=False, without="new models cannot be validated in shadow"),
        _on_exit(camera, "demo_camera", shut_down=False, without="no more demo camera frames"),
    ]

    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="Namespace for all nodes."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with one ros__parameters block per node."),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="Camera topic (sensor_msgs/Image: rgb8, bgr8 or mono8)."),
        DeclareLaunchArgument("results_topic", default_value="results",
                              description="Topic of robot_model_deployer/InferenceResult messages."),
        DeclareLaunchArgument("initial_bundle", default_value="",
                              description="Bundle deployed at start-up when the store has no active model."),
        DeclareLaunchArgument("store_dir", default_value="~/.local/share/robot_model_deployer/store",
                              description="On-robot model store (versions, state.json, staging)."),
        DeclareLaunchArgument("trust_dir", default_value="",
                              description="Directory of trusted public keys (.pub) that bundles must be signed by."),
        DeclareLaunchArgument("allow_unsigned", default_value="false",
                              description="Accept unsigned bundles (development only; logged as a warning)."),
        DeclareLaunchArgument("demo_camera", default_value="false",
                              description="Also start the demo camera (scikit-image photos)."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (e.g. from Gazebo) instead of the wall clock."),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                                                default_value=default_profile),
                              description="Fast DDS XML profile for every node (default: $FASTDDS_DEFAULT_PROFILES_FILE "
                                          "if set, else config/fastdds_large_data.xml, which moves camera frames "
                                          "over shared memory); '' for Fast DDS's defaults."),
        OpaqueFunction(function=_require_params_file),  # before any node starts
        OpaqueFunction(function=_fastdds_profile),
        *on_exit,
        *perception, shadow, manager, camera,
    ])

"""Start the model deployer: manager, two lifecycle perception nodes, optional demo camera.

    ros2 launch robot_model_deployer deployer.launch.py \
        image_topic:=/camera/image_raw initial_bundle:=/path/to/bundle

The perception nodes subscribe to ``image_topic`` and publish on
``results_topic``; only the live one publishes. The manager configures and
activates them through their lifecycle services, so no lifecycle manager is
needed here.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    default_params = str(Path(get_package_share_directory("robot_model_deployer")) / "config" / "deployer.yaml")
    params = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    # Typed on purpose: launch_ros reads an untyped substitution with YAML rules, so a bundle path
    # such as "/data/bundle #2" would lose everything after " #", and use_sim_time:=1 would reach
    # the node as an integer (rclpy then refuses it). With a type, the path stays a string and
    # use_sim_time accepts true/false/1/0 like IfCondition does.
    use_sim_time = {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}
    initial_bundle = ParameterValue(LaunchConfiguration("initial_bundle"), value_type=str)
    topics = [("image", LaunchConfiguration("image_topic")), ("results", LaunchConfiguration("results_topic"))]

    perception = [
        LifecycleNode(package="robot_model_deployer", executable="perception_node", name=name,
                      namespace=namespace, parameters=[params, use_sim_time], remappings=topics, output="screen")
        for name in ("perception_a", "perception_b")
    ]
    manager = Node(package="robot_model_deployer", executable="manager_node", name="model_manager",
                   namespace=namespace, output="screen",
                   parameters=[params, use_sim_time, {"initial_bundle": initial_bundle}])
    camera = Node(package="robot_model_deployer", executable="demo_camera_node", name="demo_camera",
                  namespace=namespace, parameters=[params, use_sim_time],
                  remappings=[("image", LaunchConfiguration("image_topic"))], output="screen",
                  condition=IfCondition(LaunchConfiguration("demo_camera")))

    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="Namespace for all nodes."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with one ros__parameters block per node."),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="Camera topic (sensor_msgs/Image: rgb8, bgr8 or mono8)."),
        DeclareLaunchArgument("results_topic", default_value="results",
                              description="Topic of robot_model_deployer/InferenceResult messages."),
        DeclareLaunchArgument("initial_bundle", default_value="",
                              description="Bundle deployed at start-up; empty to wait for a deploy request."),
        DeclareLaunchArgument("demo_camera", default_value="false",
                              description="Also start the demo camera (scikit-image photos)."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (e.g. from Gazebo) instead of the wall clock."),
        *perception, manager, camera,
    ])

"""The ROS test harness never hands out a domain that another graph on this host is using."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from robot_model_deployer.testing import ros_graph

_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def domains_from(monkeypatch, tmp_path):
    """Make next_domain_id start its search at a given domain, with its own lock directory."""
    monkeypatch.setattr(ros_graph, "_DOMAIN_LOCKS", tmp_path / "locks")

    def start(domain: int) -> None:
        monkeypatch.setattr(ros_graph, "_domains", itertools.count(domain - 1))
    return start


def test_a_domain_is_not_handed_out_twice(domains_from):
    domains_from(150)
    first = ros_graph.next_domain_id()
    domains_from(150)
    assert ros_graph.next_domain_id() == first + 1


def test_a_domain_locked_by_another_process_is_skipped(domains_from, tmp_path):
    domains_from(160)
    (tmp_path / "locks").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "locks" / "160.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert ros_graph.next_domain_id() == 161
    finally:
        holder.communicate("")


def test_a_domain_a_running_process_uses_is_skipped(domains_from):
    domains_from(170)
    # A leftover node: no lock (its test is gone), but still on domain 170.
    leftover = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                                env=dict(os.environ, ROS_DOMAIN_ID="170"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert leftover.stdout.readline().strip() == "up"
        assert ros_graph.next_domain_id() == 171
    finally:
        leftover.communicate("")


def test_the_search_wraps_around_within_the_valid_range(domains_from):
    domains_from(ros_graph.MAX_DOMAIN_ID + 1)  # the count goes past the last id
    assert 1 <= ros_graph.next_domain_id() <= ros_graph.MAX_DOMAIN_ID

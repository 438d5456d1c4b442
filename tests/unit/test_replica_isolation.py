"""Who process replicas run as, their uids and their cgroups: the pure rules (issue 15).

The real thing (a root daemon, real uids and cgroups, an attacker predictor) is in
tests/faults/test_isolation.py; here the decisions are fed values.
"""

from __future__ import annotations

import json
import os

import pytest

from cortexd.backends.cgroups import Cgroups, Hierarchy, Limits, hierarchies
from cortexd.backends.isolation import ReplicaUser, RunAs, not_isolated_notice
from cortexd.backends.replica_uids import UidRegistry, choose_uid, mapped, parse_range, stale_uids
from cortexd.errors import BackendError

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "8:pids:/\n4:memory:/process_api/79ec\n1:cpu:/\n0::/\n"


def test_v1_controllers_are_found_under_the_daemons_own_cgroup():
    found = hierarchies(V1_MOUNTINFO, V1_CGROUP)
    assert found == {"memory": Hierarchy(1, "/sys/fs/cgroup/memory/process_api/79ec"),
                     "pids": Hierarchy(1, "/sys/fs/cgroup/pids")}


def test_a_container_sees_its_own_cgroup_mounted_as_the_root():
    # docker without a cgroup namespace: /proc/self/cgroup names the host's path, the mount's
    # root field says that path is what /sys/fs/cgroup/memory shows
    mountinfo = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    found = hierarchies(mountinfo, "4:memory:/docker/abc/sub\n")
    assert found == {"memory": Hierarchy(1, "/sys/fs/cgroup/memory/sub")}


def test_v2_controllers_come_from_the_unified_hierarchy_when_v1_has_none():
    mountinfo = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    seen = []

    def controllers(base):
        seen.append(base)
        return ["cpu", "memory", "pids", "io"]

    found = hierarchies(mountinfo, "0::/system.slice/cortexd.service\n", controllers)
    assert seen == ["/sys/fs/cgroup/system.slice/cortexd.service"]
    assert found == {"memory": Hierarchy(2, "/sys/fs/cgroup/system.slice/cortexd.service"),
                     "pids": Hierarchy(2, "/sys/fs/cgroup/system.slice/cortexd.service")}
    # a v2 hierarchy without the controllers enabled for the daemon's cgroup offers none
    assert hierarchies(mountinfo, "0::/user.slice\n", lambda base: ["cpu"]) == {}


def test_enforcement_says_per_limit_what_holds_and_why_not():
    usable = Cgroups("x", {"memory": Hierarchy(1, "/m"), "pids": Hierarchy(1, "/p")}, {})
    said = usable.enforcement(Limits(memory=2**30, pids=512))
    assert said == {"memory": f"{2**30} bytes (cgroup v1)", "pids": "512 processes and threads (cgroup v1)"}
    assert usable.enforcement(Limits(None, 512))["memory"] == "not limited (compute.mem is not set)"
    none = Cgroups("x", {}, {"memory": "only a root daemon can ...", "pids": "only a root daemon can ..."})
    said = none.enforcement(Limits(2**30, 512))
    assert said["memory"].startswith("not enforced: only a root daemon")
    assert said["pids"].startswith("not enforced: only a root daemon")


def test_a_replica_cgroup_reads_back_oom_kills(tmp_path):
    from cortexd.backends.cgroups import ReplicaCgroup

    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert ReplicaCgroup((str(tmp_path),), str(tmp_path), 1).oom_kills() == 2
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert ReplicaCgroup((str(tmp_path),), str(tmp_path), 2).oom_kills() == 1
    assert ReplicaCgroup((), None).oom_kills() == 0


# -- uids ------------------------------------------------------------------------------------------


def test_the_uid_range_setting():
    assert parse_range("70000-99999") == (70000, 99999)
    for bad in ("70000", "a-b", "99999-70000", "0-100"):
        with pytest.raises(BackendError, match="CORTEXD_REPLICA_UIDS"):
            parse_range(bad)


def test_a_user_namespace_must_map_the_whole_range():
    assert mapped("         0          0 4294967295\n", 70000, 99999)
    assert not mapped("         0     100000      65536\n", 70000, 99999)  # rootless: 65536 uids
    # uid_map's first column is the uid inside: 1..200000 here, so 70000..99999 are mapped
    assert mapped("0 1000 1\n1 100000 200000\n", 70000, 99999)
    assert not mapped("0 1000 1\n1 100000 80000\n", 70000, 99999)  # only up to 80000


def test_the_lowest_free_uid_is_chosen_skipping_taken_and_busy_ones():
    assert choose_uid(70000, 70005, {70000, 70002}, lambda u: u == 70001) == 70003
    assert choose_uid(70000, 70001, {70000}, lambda u: u == 70001) is None
    assert choose_uid(70000, 70005, {70004}, lambda u: False, start=70004) == 70005  # in turn
    assert choose_uid(70000, 70005, {70005}, lambda u: False, start=70005) == 70000  # round again


def test_stale_entries_are_those_of_a_gone_daemon_and_of_dead_builds():
    entries = {"70000": {"owner": "/gone", "key": "api:a"},
               "70001": {"owner": "/here", "key": "api:b"},
               "70002": {"owner": "/here", "key": "build:x", "pid": 10},
               "70003": {"owner": "/here", "key": "build:y", "pid": 11}}
    assert stale_uids(entries, lambda h: h == "/here", lambda pid: pid == 11) == [70000, 70002]


@pytest.mark.skipif(os.geteuid() != 0, reason="the registry is a root daemon's")
def test_an_api_keeps_its_uid_builds_lease_and_give_back_and_two_daemons_never_share(tmp_path):
    path = tmp_path / "uids.json"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = UidRegistry(owner=str(tmp_path / "a"), uid_range=(70000, 70099), path=path)
    b = UidRegistry(owner=str(tmp_path / "b"), uid_range=(70000, 70099), path=path)
    first = a.assign("api:iris")
    assert a.assign("api:iris") == first  # kept
    other = b.assign("api:iris")  # the same API name in another daemon: another uid
    build = a.lease()
    assert len({first, other, build}) == 3
    assert a.owned() == {first, build} and b.owned() == {other}
    a.release(build)
    a.release(first)  # an API's uid is not given back by release()
    assert a.owned() == {first}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # a daemon whose home is gone loses its uids (and is told, so their HOMEs go)
    dropped: list[list[int]] = []
    (tmp_path / "b").rmdir()
    a.on_dropped = dropped.append
    a.assign("api:other")
    assert dropped == [[other]] and str(other) not in json.loads(path.read_text())
    assert a.assign("api:third") not in (first, other, build)  # given-back uids wait their turn


def test_the_registry_refuses_a_file_it_does_not_own(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file of another owner")
    path = tmp_path / "uids.json"
    path.write_text("{}")
    os.chown(path, 12345, 12345)
    with pytest.raises(BackendError, match="not owned by this user"):
        UidRegistry(owner=str(tmp_path), path=path).assign("api:a")


# -- who replicas run as ---------------------------------------------------------------------------


def test_run_as_describes_itself():
    assert "this API's own" in RunAs(ReplicaUser.dynamic(70001), True).describe()
    assert RunAs(ReplicaUser("root", 0, 0), False, "why").describe().startswith("root (not isolated")


def test_the_notice_names_the_blocking_path_and_the_fix():
    notice = not_isolated_notice("iris", 70001, "python", "/root", "/root/.pyenv/versions/3.11.7/bin/python3.11")
    assert "api 'iris': replicas run as root, not isolated" in notice
    assert "Python interpreter /root/.pyenv" in notice and "/opt/cortexd" in notice and "Docker" in notice
    notice = not_isolated_notice("iris", 70001, "project", "/srv/private", "/usr/bin/python3")
    assert "/srv/private is not readable by other users" in notice and "chmod -R o+rX" in notice

"""/mnt/project, where Cortex put the project (issue 17): the decisions, fed values.

Where each backend puts it and why not (cortexd/backends/project_mount.py), how the process
backend's namespace is described to the child (mount_namespace.py's prepared values), and the
note a replica adds to a traceback when a predictor's open of /mnt/project fails
(predictor_runtime/mnt_project.py). The real namespaces are in
tests/integration/test_project_mount.py; the container in tests/docker/test_docker_backend.py.
"""

from __future__ import annotations

import os

import pytest

from cortexd.backends.mount_namespace import observe_mnt
from cortexd.backends.project_mount import (
    bind_remount_flags,
    has_cap_sys_admin,
    in_the_way,
    namespace_kind,
    probe_blocker,
    process_mount,
    unavailable_notice,
)
from cortexd.ui.text import isolation_lines
from predictor_runtime import mnt_namespace as ns
from predictor_runtime.mnt_namespace import HostMnt, MntEntry, MountPlan, id_maps, tmpfs_options
from predictor_runtime.mnt_project import UNAVAILABLE_ENV, failure_text, missing_mount_point, note

HOST = HostMnt(True, False, (MntEntry("data", "dir"), MntEntry("disk.img", "file"),
                             MntEntry("usb", "link", "/media/usb")), 0o755, 0, 0)
ROOT_STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
USER_STATUS = "Name:\tpython\nCapEff:\t0000000000000000\n"


def decide(project="/srv/proj", paths=("/srv/proj",), host=HOST, kind="mount", blocker=None, flags=0):
    return process_mount(project, list(paths), host, kind=kind, blocker=blocker, user_ids=(1000, 1000),
                         source_flags=flags)


def test_a_privileged_daemon_covers_a_mnt_without_a_project_folder_and_binds_the_project():
    mount = decide()
    assert mount.unavailable is None and mount.plan is not None
    assert mount.plan.source == "/srv/proj" and mount.plan.user_ids is None
    assert mount.plan.cover == HOST  # the host's entries come back on the tmpfs
    assert mount.plan.remount & (ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY) == ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY
    assert mount.shown == "the project, read-only (a mount namespace of each replica's own)"
    assert mount.describe() == {"project_mount": mount.shown, "project_mount_available": True}
    # the host has a /mnt/project folder: the namespace binds over it, nothing else changes
    assert decide(host=HostMnt(True, has_project=True)).plan.cover is None


def test_a_daemon_without_cap_sys_admin_uses_a_user_namespace_mapping_its_own_ids():
    assert namespace_kind(has_cap_sys_admin(ROOT_STATUS), drops=True) == "mount"
    assert namespace_kind(has_cap_sys_admin(USER_STATUS), drops=False) == "user"
    mount = decide(kind="user")
    assert mount.plan.user_ids == (1000, 1000)
    assert "a user and mount namespace" in mount.shown
    # replicas of another uid cannot be held by a user namespace that maps the daemon's alone
    assert namespace_kind(False, drops=True) is None
    refused = decide(kind=None)
    assert refused.plan is None and "lacks CAP_SYS_ADMIN" in refused.unavailable
    assert has_cap_sys_admin("no capabilities line") is False


def test_where_no_way_works_the_reason_and_the_remedy_are_said():
    no_mnt = decide(host=HostMnt(exists=False))
    assert no_mnt.plan is None
    assert no_mnt.unavailable == "this host has no /mnt folder, and cortexd does not create folders on the host"
    assert no_mnt.describe()["project_mount_available"] is False
    assert "--backend docker" in no_mnt.shown and "relative paths" in no_mnt.shown
    probed = decide(kind="user", blocker="user namespaces are off")
    assert probed.unavailable == "user namespaces are off" and probed.plan is None
    notice = unavailable_notice("detector", "user namespaces are off")
    assert notice.startswith("api 'detector': /mnt/project (where Cortex mounted the project) is not "
                             "available to its replicas on the process backend: user namespaces are off.")
    assert "CORTEX_PROJECT_DIR" in notice and "--backend docker" in notice


def test_a_project_at_mnt_project_needs_nothing_and_folders_in_its_way_are_refused():
    there = decide(project="/mnt/project", paths=["/mnt/project"], kind=None)
    assert there.plan is None and there.unavailable is None
    assert in_the_way(["/srv/proj", "/mnt/project/models"], "/srv/proj") == (
        "/mnt/project/models lies under /mnt/project, and a mount there would hide it")
    assert "holds /mnt" in in_the_way(["/mnt"], "/mnt")
    assert "holds /mnt" in in_the_way(["/"], "/")
    assert in_the_way(["/mnt/data/proj", "/mnt/projects"], "/mnt/data/proj") is None  # beside it: fine
    hidden = decide(paths=["/srv/proj", "/mnt/project/models"])
    assert hidden.plan is None and "lies under /mnt/project" in hidden.unavailable


def test_the_bind_is_read_only_and_keeps_the_flags_a_user_namespace_may_not_drop():
    ro = ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV
    assert bind_remount_flags(os.ST_RELATIME) == ro | ns.MS_RELATIME
    assert bind_remount_flags(os.ST_NOEXEC | os.ST_NOATIME) == ro | ns.MS_NOEXEC | ns.MS_NOATIME
    assert bind_remount_flags(0) == ro | ns.MS_STRICTATIME  # strictatime stays strictatime
    assert bind_remount_flags(os.ST_RDONLY | os.ST_RELATIME) == ro | ns.MS_RELATIME


@pytest.mark.parametrize(("facts", "because"), [
    ({"user.max_user_namespaces": "0"},
     "user namespaces are disabled on this host (sysctl user.max_user_namespaces = 0)"),
    ({"user.max_user_namespaces": "100", "kernel.unprivileged_userns_clone": "0"},
     "unprivileged user namespaces are disabled on this host (sysctl kernel.unprivileged_userns_clone = 0)"),
    ({"kernel.apparmor_restrict_unprivileged_userns": "1"}, "AppArmor restricts unprivileged user namespaces"),
    ({"seccomp": "2"}, "a seccomp filter on the daemon refuses it"),
])
def test_a_failed_probe_is_explained_by_the_hosts_settings(facts, because):
    said = probe_blocker("user", "unshare(CLONE_NEWUSER|CLONE_NEWNS) failed: Operation not permitted", facts)
    assert said.startswith("a daemon without CAP_SYS_ADMIN gives each replica a user "
                           "and mount namespace of its own, and unshare(CLONE_NEWUSER|CLONE_NEWNS) failed: "
                           "Operation not permitted, because ")
    assert because in said
    # root without capabilities may not map uid 0 (Linux 5.12+: CAP_SETFCAP)
    capless = probe_blocker("user", "writing /proc/self/uid_map failed: Operation not permitted", {"euid": "0"})
    assert capless.endswith("failed: Operation not permitted, because mapping root (uid 0) into a user namespace "
                            "takes CAP_SETFCAP, and this root daemon runs without capabilities; run it with "
                            "CAP_SYS_ADMIN (it then makes a mount namespace alone) or as a non-root user")
    root = probe_blocker("mount", "unshare(CLONE_NEWNS) failed: Operation not permitted", {"seccomp": "0"})
    assert root == ("the daemon gives each replica a mount namespace of its own, and "
                    "unshare(CLONE_NEWNS) failed: Operation not permitted")


def test_what_the_namespace_is_handed_is_prepared_bytes_and_the_plan_travels_whole():
    assert id_maps(None) == ()
    assert id_maps((1000, 1001)) == ((b"/proc/self/setgroups", b"deny"), (b"/proc/self/uid_map", b"1000 1000 1\n"),
                                      (b"/proc/self/gid_map", b"1001 1001 1\n"))
    assert tmpfs_options(HOST, None) == b"mode=755,size=1048576,nr_inodes=19,uid=0,gid=0"
    # in a user namespace only the replica's ids are mapped: root's /mnt keeps the mounter as owner
    assert tmpfs_options(HOST, (1000, 1000)) == b"mode=755,size=1048576,nr_inodes=19"
    # a non-root daemon's replica gets its plan in the environment, and reads back the same plan
    plan = decide(kind="user").plan
    assert MountPlan.loads(plan.dumps()) == plan
    assert MountPlan.loads(decide(host=HostMnt(True, True)).plan.dumps()).cover is None


def test_the_hosts_mnt_is_read_as_it_is(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "disk.img").write_text("")
    (tmp_path / "usb").symlink_to("/media/usb")
    (tmp_path / "project").write_text("a file named project is covered, not bound over")
    seen = observe_mnt(str(tmp_path))
    assert seen.exists and not seen.has_project
    assert seen.entries == (MntEntry("data", "dir"), MntEntry("disk.img", "file"),
                            MntEntry("usb", "link", "/media/usb"))
    (tmp_path / "project").unlink()
    (tmp_path / "project").mkdir()
    assert observe_mnt(str(tmp_path)) == HostMnt(True, True, (), *_mode_and_owner(tmp_path))
    assert observe_mnt(str(tmp_path / "missing")) == HostMnt(exists=False)
    assert observe_mnt(str(tmp_path / "disk.img")) == HostMnt(exists=False)


def _mode_and_owner(path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


def test_get_shows_what_replicas_have_at_mnt_project():
    lines = isolation_lines({"runs_as": "root", "project_mount": "the project, read-only (x)",
                             "project_mount_available": True})
    assert lines[-1] == "/mnt/project: the project, read-only (x)"
    assert isolation_lines({"runs_as": "root"}) == ["runs as:    root"]  # an older daemon says nothing


# -- the replica's note ------------------------------------------------------------------------

def test_a_failed_open_of_mnt_project_gets_the_reason_and_the_remedy():
    environ = {UNAVAILABLE_ENV: "user namespaces are disabled"}
    opened = FileNotFoundError(2, "No such file or directory", "/mnt/project/coco_labels.txt")
    said = note(opened, environ)
    assert said.startswith("note: /mnt/project (where Cortex mounted the project) is not available to this "
                           "replica: user namespaces are disabled; use the Docker backend")
    assert note(opened, {}) is None  # /mnt/project is there: a missing file is just missing
    # raised from a library, with the path in its message only, or wrapped in another exception
    assert missing_mount_point(FileNotFoundError("No such file: /mnt/project/model.pt"))
    try:
        try:
            raise FileNotFoundError(2, "No such file or directory", "/mnt/project")
        except FileNotFoundError as e:
            raise RuntimeError("could not load the labels") from e
    except RuntimeError as e:
        assert missing_mount_point(e)
    assert not missing_mount_point(FileNotFoundError(2, "No such file or directory", "/mnt/projects/x"))
    assert not missing_mount_point(PermissionError(13, "Permission denied", "/mnt/project/x"))
    assert not missing_mount_point(None)


def test_the_traceback_text_carries_the_note(monkeypatch):
    monkeypatch.setenv(UNAVAILABLE_ENV, "no namespaces here")
    try:
        raise FileNotFoundError(2, "No such file or directory", "/mnt/project/labels.txt")
    except FileNotFoundError:
        text = failure_text()
    assert text.splitlines()[0] == "Traceback (most recent call last):"
    assert text.splitlines()[-1].startswith("note: /mnt/project (where Cortex mounted the project) is not "
                                            "available to this replica: no namespaces here;")
    try:
        raise ValueError("unrelated")
    except ValueError:
        assert "note:" not in failure_text()

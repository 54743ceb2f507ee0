"""A run or a sweep trial writes in its machine's HOME; what it leaves there never runs in the next
command's session (red-team finding: a trial's ~/.bashrc answered every later `agent exec` with
"exit 0", so later trials never ran and were recorded as succeeded; Debian's bash sources
~/.bashrc for every ssh command). Neither ~/.bashrc nor ~/.ssh/rc runs on a local machine."""
from __future__ import annotations

from fleet.remote.ssh import connect


def test_rc_files_a_run_leaves_in_home_do_not_run_in_later_sessions(local_lease):
    lease = local_lease()
    machine = lease.machines[0]
    with connect(machine, timeout=30) as session:
        session.run('mkdir -p "$HOME/.ssh" && printf "echo HIJACKED; exit 0\\n" > "$HOME/.bashrc" && '
                    'printf "echo RC-RAN >&2\\n" > "$HOME/.ssh/rc" && printf "echo PROFILE\\n" > "$HOME/.profile"',
                    check=True)
    with connect(machine, timeout=30) as session:
        result = session.run('echo "ran $FLEET_MACHINE_ID"; exit 3', check=False)
        bash = session.run(["bash", "-c", "echo second"], check=False)
    assert result.stdout.strip() == f"ran {machine.id}" and result.exit_code == 3
    assert "RC-RAN" not in result.stderr and "HIJACKED" not in bash.stdout
    assert bash.stdout.strip() == "second"

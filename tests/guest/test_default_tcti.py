# SPDX-License-Identifier: GPL-2.0
"""The machine-wide TCTI settings (`make install-tcti`, tcti/): installed into a staging root,
they route tpm2-tools given no TCTI to /dev/tpmrs0 (without them the tools use their default,
/dev/tpmrm0), they point FAPI's fapi-config.json at /dev/tpmrs0, and they turn resident
contexts on (/etc/modprobe.d/tpmrs.conf: resident=1, beside the file's own options)."""

import json
import os
import subprocess

import tpm


def install(root, target="install-tcti"):
    subprocess.run(
        ["make", "-s", "-C", os.environ["TPMRS_ROOT"], target, f"DESTDIR={root}"],
        check=True, capture_output=True, text=True, timeout=120,
    )


def modprobe_options(root):
    """The tpmrs options modprobe reads from the staged modprobe.d (modprobe -C DIR -c)."""
    p = subprocess.run(["modprobe", "-C", f"{root}/etc/modprobe.d", "-c"],
                       capture_output=True, text=True, timeout=60)
    return [line for line in p.stdout.splitlines() if line.startswith("options tpmrs ")]


def env_from(path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("TCTI")}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def getrandom(env):
    p = subprocess.run(["tpm2", "getrandom", "--hex", "8"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_tools_without_tcti_reach_tpmrs0_once_installed():
    root = "/tmp/tcti-root"
    install(root)
    conf = f"{root}/etc/environment.d/60-tpmrs.conf"
    assert os.path.exists(f"{root}/etc/profile.d/tpmrs.sh")
    assert os.path.exists(f"{root}/etc/systemd/system.conf.d/60-tpmrs.conf")
    bare = {k: v for k, v in os.environ.items() if not k.endswith("TCTI")}
    # Before: the tools' default is /dev/tpmrm0, tpmrs sees nothing.
    before = tpm.tpmrs_stats()["client_commands"]
    getrandom(bare)
    assert tpm.tpmrs_stats()["client_commands"] == before
    # With the installed settings and still no --tcti: through tpmrs.
    getrandom(env_from(conf))
    assert tpm.tpmrs_stats()["client_commands"] > before
    # A login shell reads the same settings through profile.d.
    out = subprocess.run(
        ["sh", "-c", f"sed 's#/etc/environment.d/#{root}/etc/environment.d/#' "
         f"{root}/etc/profile.d/tpmrs.sh > /tmp/tcti-profile.sh; . /tmp/tcti-profile.sh; "
         "echo $TPM2TOOLS_TCTI"], env=bare, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "device:/dev/tpmrs0", out
    # FAPI: fapi-config.json names tpmrs0.
    with open(f"{root}/etc/tpm2-tss/fapi-config.json") as f:
        assert json.load(f)["tcti"] == "device:/dev/tpmrs0"


def test_install_tcti_turns_resident_contexts_on():
    root = "/tmp/tcti-root-modprobe"
    install(root)
    assert modprobe_options(root) == ["options tpmrs resident=1"], modprobe_options(root)
    install(root, "uninstall-tcti")
    assert not os.path.exists(f"{root}/etc/modprobe.d/tpmrs.conf")
    # A machine's own options stay, beside resident=1, and come back alone at uninstall.
    os.makedirs(f"{root}/etc/modprobe.d", exist_ok=True)
    with open(f"{root}/etc/modprobe.d/tpmrs.conf", "w") as f:
        f.write("options tpmrs max_sessions=16\n")
    install(root)
    install(root)
    opts = modprobe_options(root)
    assert sorted(opts) == ["options tpmrs max_sessions=16", "options tpmrs resident=1"], opts
    install(root, "uninstall-tcti")
    assert modprobe_options(root) == ["options tpmrs max_sessions=16"]

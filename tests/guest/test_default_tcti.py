# SPDX-License-Identifier: GPL-2.0
"""The machine-wide TCTI settings (`make install-tcti`, tcti/): installed into a staging root,
they route tpm2-tools given no TCTI to /dev/tpmrs0 (without them the tools use their default,
/dev/tpmrm0), and they point FAPI's fapi-config.json at /dev/tpmrs0."""

import json
import os
import subprocess

import tpm


def install(root):
    subprocess.run(
        ["make", "-s", "-C", os.environ["TPMRS_ROOT"], "install-tcti", f"DESTDIR={root}"],
        check=True, capture_output=True, text=True, timeout=120,
    )


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

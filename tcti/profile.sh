# SPDX-License-Identifier: GPL-2.0
# /etc/profile.d/tpmrs.sh (make install-tcti): login shells get the TCTI settings of
# /etc/environment.d/60-tpmrs.conf (KEY=VALUE lines; comments skipped).
if [ -r /etc/environment.d/60-tpmrs.conf ]; then
	while IFS='=' read -r key value; do
		case $key in '' | \#*) continue ;; esac
		export "$key=$value"
	done </etc/environment.d/60-tpmrs.conf
fi

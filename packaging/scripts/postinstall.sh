#!/bin/sh
# baton: after the files are in place. One script for both package formats:
#   deb postinst: configure [<most recently configured version>] | abort-*
#   rpm %post:    1 (first install) | 2 and up (upgrade)
# Install: create the baton group and the state directory, reload systemd, and start
# the agent only if its configuration is valid (as shipped it is not).
# Upgrade: restart a running agent on the new binary, but never in the middle of a
# host upgrade: then leave it a request to restart at its next idle moment.
set -e

unit=baton.service
bin=/usr/bin/baton
config=/etc/baton/agent.yaml
state=/var/lib/baton
txn=$state/txn.json                  # exists while the agent has an upgrade open
request=/run/baton/restart-requested # the agent exits 75 on it when idle; systemd restarts it

case "$1" in
configure) if [ -n "$2" ]; then action=upgrade; else action=install; fi ;;
1) action=install ;;
[0-9]*) action=upgrade ;;
*) exit 0 ;;
esac

if ! getent group baton >/dev/null; then
	groupadd --system baton
fi
[ -d "$state" ] || mkdir -m 0755 "$state"

# Without a running systemd (a chroot, an image build) there is nothing to start.
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload

config_ok() { "$bin" validate-config "$config" >/dev/null 2>&1; }

if [ "$action" = install ]; then
	if config_ok; then
		systemctl enable --now "$unit" || echo "baton: the agent did not start: see journalctl -u baton" >&2
	else
		systemctl disable "$unit" >/dev/null 2>&1 || true
		echo "baton: not started: $config is not valid yet (as installed it names no fleet repository)."
		echo "baton: edit it, check it with 'baton validate-config', then run 'systemctl enable --now baton'."
	fi
	exit 0
fi

# An upgrade. Running is active, or starting (activating) on the old binary; a unit
# waiting to restart after a failure (auto-restart) starts the new one by itself.
active=$(systemctl show -p ActiveState --value "$unit" 2>/dev/null || true)
sub=$(systemctl show -p SubState --value "$unit" 2>/dev/null || true)
case "$active" in
active | reloading | activating) [ "$sub" != auto-restart ] || exit 0 ;;
*)
	if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
		echo "baton: upgraded; the agent is not enabled (systemctl enable --now baton starts it)."
	fi
	exit 0
	;;
esac

if ! config_ok; then
	echo "baton: the new version refuses $config; the agent goes on running the old one." >&2
	echo "baton: fix the file (baton validate-config says how), then run 'systemctl restart baton'." >&2
	"$bin" validate-config "$config" >&2 || true
	exit 0
fi

# An upgrade of the host that begins between this test and the restart is at its first
# steps when SIGTERM comes: the agent aborts it before it touched anything, and the new
# agent starts it again.
if [ -e "$txn" ]; then
	touch "$request" 2>/dev/null || true
	echo "baton: the agent is upgrading this host's services; it restarts on the new version when that is done."
else
	systemctl try-restart "$unit" || echo "baton: the new agent did not start: see journalctl -u baton" >&2
fi
exit 0

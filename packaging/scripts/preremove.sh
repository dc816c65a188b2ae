#!/bin/sh
# baton: before the files are removed. One script for both package formats:
#   deb prerm:  remove | upgrade <new version> | deconfigure | failed-upgrade
#   rpm %preun: 0 (erase) | 1 and up (upgrade: the old package's files go)
# Remove: stop and disable the agent. An upgrade leaves it running: the new package's
# post-install script restarts it when it is idle.
set -e

unit=baton.service
txn=/var/lib/baton/txn.json

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

[ -d /run/systemd/system ] || { systemctl disable "$unit" >/dev/null 2>&1 || true; exit 0; }
if [ -e "$txn" ] && systemctl is-active --quiet "$unit"; then
	echo "baton: stopping the agent in the middle of an upgrade of this host's services ($txn);"
	echo "baton: it stops at a point it resumes from, the next time baton starts."
fi
systemctl disable --now "$unit" >/dev/null 2>&1 || systemctl stop "$unit" || true
exit 0

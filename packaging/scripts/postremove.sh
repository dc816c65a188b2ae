#!/bin/sh
# baton: after the files are removed. One script for both package formats:
#   deb postrm:  remove | purge | upgrade <new version> | disappear | abort-* | failed-upgrade
#   rpm %postun: 0 (erased) | 1 and up (upgraded)
# Purge (deb only) removes the agent's state: the state directory, the runtime
# directory, and the configuration directory when nothing but the package's file was in
# it. It keeps the releases that units on this host still run from, the baton group,
# and files under /etc/baton that the package did not install.
set -e

unit=baton.service
state=/var/lib/baton

reload() {
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		systemctl reset-failed "$unit" >/dev/null 2>&1 || true
	fi
}

purge_state() {
	rm -rf /run/baton
	if [ -d "$state" ]; then
		keep=
		# A unit file that names a release directory runs from it: removing the
		# release would break that service at its next start.
		if [ -d "$state/releases" ] && grep -rqs -- "$state/releases/" /etc/systemd/system; then
			keep=releases
		fi
		for f in "$state"/* "$state"/.[!.]* "$state"/..?*; do
			[ -e "$f" ] || [ -L "$f" ] || continue
			[ -n "$keep" ] && [ "$f" = "$state/releases" ] && continue
			rm -rf -- "$f"
		done
		if [ -n "$keep" ]; then
			echo "baton: kept $state/releases: unit files in /etc/systemd/system still run services from it."
		else
			rmdir "$state" 2>/dev/null || true
		fi
	fi
	# dpkg removes the conffile itself; what it left beside it goes too.
	rm -f /etc/baton/agent.yaml /etc/baton/agent.yaml.dpkg-* /etc/baton/agent.yaml.ucf-*
	if [ -d /etc/baton ] && ! rmdir /etc/baton 2>/dev/null; then
		echo "baton: kept /etc/baton: it holds files the package did not install (keys, tokens)."
	fi
}

case "$1" in
remove) reload ;;
purge)
	reload
	purge_state
	;;
0)
	reload
	# rpm keeps a changed /etc/baton/agent.yaml as agent.yaml.rpmsave.
	echo "baton: kept $state and /etc/baton (rpm has no purge: remove them by hand to clean up)."
	;;
esac
exit 0

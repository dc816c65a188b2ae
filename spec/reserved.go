package spec

import (
	"path"
	"slices"
	"strings"
)

// Reasons a unit name is reserved, as ReservedUnit reports them.
const (
	reasonBaton   = "it is baton's own unit, and a repository that replaced it could stop the agent or run anything as root in its place"
	reasonSystemd = "the systemd- prefix is systemd's own namespace (journald, logind, networkd, udevd, ...)"
	reasonTarget  = "it is one of systemd's special targets, and overriding it changes how the host boots, shuts down or reaches the network"
	reasonSpecial = "it is one of systemd's special units (the root mount, the slices every process runs in, PID 1's scope)"
	reasonAccess  = "it keeps the host reachable and manageable (D-Bus, SSH, logins on a console)"
)

// reservedUnits are unit names a repository may not ship unless the agent's config
// allows them by name. The fleet repository is code that baton runs as root: a unit
// file under one of these names would replace (from /etc/systemd/system, which comes
// before the vendor directories) a unit the host needs to boot, to stay reachable or to
// keep baton itself running, and baton's own rollback could not repair a host it can
// no longer reach. The list follows systemd.special(7) and the units that give access
// to a host. Template names cover their instances: getty@.service reserves
// getty@tty1.service. Names starting with "systemd-" and baton's own names are
// reserved by ReservedUnit without being listed here.
var reservedUnits = map[string]string{
	// Targets: the boot, shutdown and network synchronisation points.
	"default.target": reasonTarget, "multi-user.target": reasonTarget, "graphical.target": reasonTarget,
	"basic.target": reasonTarget, "sysinit.target": reasonTarget, "rescue.target": reasonTarget,
	"emergency.target": reasonTarget, "shutdown.target": reasonTarget, "reboot.target": reasonTarget,
	"poweroff.target": reasonTarget, "halt.target": reasonTarget, "kexec.target": reasonTarget,
	"exit.target": reasonTarget, "final.target": reasonTarget, "umount.target": reasonTarget,
	"ctrl-alt-del.target": reasonTarget, "initrd.target": reasonTarget, "initrd-root-fs.target": reasonTarget,
	"initrd-fs.target": reasonTarget, "initrd-switch-root.target": reasonTarget,
	"network.target": reasonTarget, "network-online.target": reasonTarget, "network-pre.target": reasonTarget,
	"nss-lookup.target": reasonTarget, "nss-user-lookup.target": reasonTarget, "time-sync.target": reasonTarget,
	"time-set.target": reasonTarget, "sockets.target": reasonTarget, "timers.target": reasonTarget,
	"paths.target": reasonTarget, "slices.target": reasonTarget, "local-fs.target": reasonTarget,
	"local-fs-pre.target": reasonTarget, "remote-fs.target": reasonTarget, "remote-fs-pre.target": reasonTarget,
	"swap.target": reasonTarget, "cryptsetup.target": reasonTarget, "getty.target": reasonTarget,
	"getty-pre.target": reasonTarget, "sysinit-pre.target": reasonTarget, "rpcbind.target": reasonTarget,

	// Special units: the root file system, the slices, PID 1's scope, the rescue shells.
	"-.mount": reasonSpecial, "-.slice": reasonSpecial, "system.slice": reasonSpecial,
	"user.slice": reasonSpecial, "machine.slice": reasonSpecial, "init.scope": reasonSpecial,
	"rescue.service": reasonSpecial, "emergency.service": reasonSpecial,

	// Access: the message bus, SSH, consoles and user sessions.
	"dbus.service": reasonAccess, "dbus.socket": reasonAccess, "dbus-broker.service": reasonAccess,
	"ssh.service": reasonAccess, "ssh.socket": reasonAccess, "ssh@.service": reasonAccess,
	"sshd.service": reasonAccess, "sshd.socket": reasonAccess, "sshd@.service": reasonAccess,
	"getty@.service": reasonAccess, "serial-getty@.service": reasonAccess, "autovt@.service": reasonAccess,
	"console-getty.service": reasonAccess, "container-getty@.service": reasonAccess,
	"user@.service": reasonAccess, "user-runtime-dir@.service": reasonAccess,
}

// ReservedUnit reports whether a repository may ship a unit named name only when the
// agent's config allows that name, and why: baton's own units (baton.<type> and
// baton@...), names starting with "systemd-", and the units of reservedUnits (systemd's
// special targets and units, D-Bus, SSH, consoles), instances of a reserved template
// included. The reason is a phrase that follows "<name> is reserved: ".
func ReservedUnit(name string) (reason string, reserved bool) {
	prefix := strings.TrimSuffix(name, path.Ext(name))
	switch {
	case prefix == "baton", strings.HasPrefix(name, "baton@"):
		return reasonBaton, true
	case strings.HasPrefix(name, "systemd-"):
		return reasonSystemd, true
	}
	if r, ok := reservedUnits[name]; ok {
		return r, true
	}
	if t := templateOf(name); t != "" {
		if r, ok := reservedUnits[t]; ok {
			return r, true
		}
	}
	return "", false
}

// LoadOptions are what an agent's config may change in how a repository is read.
type LoadOptions struct {
	// AllowUnits are reserved unit names (see ReservedUnit) the repository may ship
	// all the same, each written exactly as in a service's units: allowing
	// getty@.service allows that template, not getty@tty1.service. A name that is not
	// reserved changes nothing.
	AllowUnits []string
}

// reserved is ReservedUnit, except for the names o allows.
func (o LoadOptions) reserved(name string) (reason string, reserved bool) {
	if slices.Contains(o.AllowUnits, name) {
		return "", false
	}
	return ReservedUnit(name)
}

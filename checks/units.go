package checks

import (
	"context"
	"fmt"
	"strings"
)

// UnitState is what the implicit checks read of a restarted unit: systemd's unit
// properties of the same names (NRestarts and MainPID only mean something for a
// service).
type UnitState struct {
	ActiveState, SubState, Result string
	NRestarts, MainPID            uint32
}

// UnitStater reads a unit's state; the agent implements it over systemd.
type UnitStater interface {
	UnitState(ctx context.Context, unit string) (UnitState, error)
}

// unitWatch holds the implicit checks of one unit. Its rules:
//   - active, reloading and refreshing are up; activating is not up yet (the
//     healthy window waits), except activating/auto-restart*, which is a crash
//     that systemd is about to restart, and fails; any other state fails;
//   - NRestarts is taken at the first read; any change fails;
//   - the main PID is settled the first time the unit is read up: at the start,
//     or later when it was still activating (a forking or notify service, or a
//     oneshot still running its command: its main PID becomes 0 when it is done
//     and RemainAfterExit keeps it active). Before that it may change freely;
//     after it, any change fails, to 0 as well.
//
// A unit other than a .service (a socket, a timer...) is only required to stay up.
type unitWatch struct {
	name    string
	service bool   // a .service: NRestarts and the main PID are watched too
	read    bool   // a state has been read since the start
	settled bool   // pid holds the settled main PID
	nres    uint32 // NRestarts at the first read
	pid     uint32
	up      bool // the last read found the unit up and settled
	last    Result
}

func newUnitWatch(name string) *unitWatch {
	return &unitWatch{name: name, service: strings.HasSuffix(name, ".service")}
}

// fail records a read error: the unit does not count as up, but nothing fails.
func (u *unitWatch) fail(r Result, err error) {
	u.up = false
	r.Err = fmt.Sprintf("%s: read state: %v", u.name, err)
	u.last = r
}

// observe applies a state read into r and returns why the unit fails the
// verification, or "".
func (u *unitWatch) observe(r Result, s UnitState) (fatal string) {
	if !u.read {
		u.read = true
		u.nres = s.NRestarts
	}
	r.Output = describeState(s, u.service)
	up := false
	var notUp string
	switch {
	case u.service && s.NRestarts != u.nres:
		fatal = fmt.Sprintf("%s restarted (NRestarts %d -> %d)", u.name, u.nres, s.NRestarts)
	case s.ActiveState == "active" || s.ActiveState == "reloading" || s.ActiveState == "refreshing":
		up = true
	case s.ActiveState == "activating" && strings.HasPrefix(s.SubState, "auto-restart"):
		fatal = fmt.Sprintf("%s exited and waits to be restarted%s", u.name, resultNote(s.Result))
	case s.ActiveState == "activating":
		notUp = fmt.Sprintf("%s is activating (%s)", u.name, s.SubState)
	default:
		fatal = fmt.Sprintf("%s is %s%s", u.name, s.ActiveState, resultNote(s.Result))
	}
	if fatal == "" && u.service {
		switch {
		case u.settled && s.MainPID != u.pid:
			fatal = fmt.Sprintf("%s main PID changed %d -> %d", u.name, u.pid, s.MainPID)
		case up && !u.settled:
			u.settled, u.pid = true, s.MainPID
		}
	}
	u.up = up && fatal == ""
	r.OK = u.up
	switch {
	case fatal != "":
		r.Err = fatal
	case !up:
		r.Err = notUp
	}
	u.last = r
	return fatal
}

// notUp says why the unit is not up, or "".
func (u *unitWatch) notUp() string {
	switch {
	case u.up:
		return ""
	case u.last.Err != "":
		return u.last.Err
	}
	return fmt.Sprintf("%s: state not read yet", u.name)
}

func resultNote(result string) string {
	if result == "" {
		return ""
	}
	return fmt.Sprintf(" (Result %s)", result)
}

func describeState(s UnitState, service bool) string {
	d := fmt.Sprintf("%s (%s)", s.ActiveState, s.SubState)
	if service {
		d += fmt.Sprintf(", NRestarts %d, MainPID %d", s.NRestarts, s.MainPID)
	}
	if s.Result != "" {
		d += ", Result " + s.Result
	}
	return d
}

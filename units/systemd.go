package units

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// jobMode is the mode of every job baton queues: it replaces conflicting queued jobs,
// as systemctl does.
const jobMode = "replace"

// connCheckInterval is how often a wait for a job checks that the connection to
// systemd still stands (a daemon-reexec closes it, and the job's result is then lost).
const connCheckInterval = time.Second

// errNoSuchUnit is the D-Bus error systemd returns for a unit it has not loaded.
const errNoSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"

// Systemd is a connection to the system's service manager. Its methods may be called
// from several goroutines; a connection that systemd closed (daemon-reexec) is
// re-established by the next call.
type Systemd struct {
	mu     sync.Mutex
	conn   *dbus.Conn
	closed bool
}

// Connect connects to systemd: over its private socket /run/systemd/private (root
// only, no dbus-daemon needed), else over the system bus.
func Connect(ctx context.Context) (*Systemd, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return &Systemd{conn: c}, nil
}

// dial opens a connection. go-systemd closes a connection when the context it was
// dialled with ends, so the connection gets one that is never cancelled, and ctx only
// bounds the wait.
func dial(ctx context.Context) (*dbus.Conn, error) {
	type result struct {
		conn *dbus.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		life := context.WithoutCancel(ctx)
		c, err := dbus.NewSystemdConnectionContext(life)
		if err != nil {
			var err2 error
			if c, err2 = dbus.NewSystemConnectionContext(life); err2 != nil {
				err = fmt.Errorf("private socket: %w; system bus: %w", err, err2)
			} else {
				err = nil
			}
		}
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("connect to systemd: %w", r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connect to systemd: %w", ctx.Err())
	}
}

// Close closes the connection. Jobs already queued run on; waits in progress fail.
func (s *Systemd) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// get returns the connection, dialling again when systemd closed the last one.
func (s *Systemd) get(ctx context.Context) (*dbus.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("connection to systemd is closed")
	}
	if s.conn != nil && s.conn.Connected() {
		return s.conn, nil
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	s.conn = c
	return c, nil
}

// lost forgets c when err says its socket is gone (systemd re-executed or was
// restarted): the next call dials again, rather than failing on the dead socket
// until go-dbus notices. It returns err.
func (s *Systemd) lost(c *dbus.Conn, err error) error {
	if err == nil || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		c.Close()
		s.conn = nil
	}
	return err
}

// Reload makes systemd re-read every unit file (daemon-reload). It returns when the
// reload is complete.
func (s *Systemd) Reload(ctx context.Context) error {
	c, err := s.get(ctx)
	if err == nil {
		err = s.lost(c, c.ReloadContext(ctx))
	}
	if err != nil {
		return fmt.Errorf("reload systemd: %w", err)
	}
	return nil
}

// JobError is a job that systemd finished with a result other than "done".
type JobError struct {
	Unit   string
	Op     string // start, restart, stop
	Result string // the job's result: failed, canceled, timeout, dependency, skipped, ...
	// Detail is the unit's state right after the job, "failed/failed, result
	// exit-code", when it could be read.
	Detail string
}

func (e *JobError) Error() string {
	msg := fmt.Sprintf("%s %s: job %s", e.Op, e.Unit, e.Result)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

type jobFunc func(c *dbus.Conn, ctx context.Context, name, mode string, ch chan<- string) (int, error)

// Start starts unit and waits for the job: nil when its result is "done" (which
// includes a unit that was already active), a *JobError otherwise.
func (s *Systemd) Start(ctx context.Context, unit string) error {
	return s.job(ctx, "start", unit, (*dbus.Conn).StartUnitContext)
}

// Restart restarts unit, or starts it when it is not running, and waits for the job.
// A .socket is refused: restarting it would close its listeners and drop the
// connections queued on them, which is what socket activation is there to prevent.
func (s *Systemd) Restart(ctx context.Context, unit string) error {
	if isSocket(unit) {
		return fmt.Errorf("restart %s: refusing to restart a socket unit (its listeners would close); start it instead", unit)
	}
	return s.job(ctx, "restart", unit, (*dbus.Conn).RestartUnitContext)
}

// Stop stops unit and waits for the job. A unit systemd does not know (no unit file,
// never loaded) is already stopped: that is not an error.
func (s *Systemd) Stop(ctx context.Context, unit string) error {
	err := s.job(ctx, "stop", unit, (*dbus.Conn).StopUnitContext)
	if isNoSuchUnit(err) {
		return nil
	}
	return err
}

// job queues a job on unit and waits for its result. ctx bounds the wait; when it ends
// first, the job runs on in systemd and job returns ctx's error.
func (s *Systemd) job(ctx context.Context, op, unit string, queue jobFunc) error {
	c, err := s.get(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, unit, err)
	}
	// go-systemd sends the result while it holds the lock of every job listener, and
	// nobody may be reading any more when ctx ends: the channel must not block it.
	results := make(chan string, 1)
	if _, err := queue(c, ctx, unit, jobMode, results); err != nil {
		s.lost(c, err)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%s %s: %w", op, unit, err)
	}
	tick := time.NewTicker(connCheckInterval)
	defer tick.Stop()
	for {
		select {
		case result := <-results:
			if result == "done" {
				return nil
			}
			return &JobError{Unit: unit, Op: op, Result: result, Detail: s.detail(ctx, unit)}
		case <-ctx.Done():
			return fmt.Errorf("%s %s: wait for the job: %w", op, unit, ctx.Err())
		case <-tick.C:
			if !c.Connected() {
				return fmt.Errorf("%s %s: lost the connection to systemd while waiting for the job", op, unit)
			}
		}
	}
}

// detail describes the unit's state after a job failed, or "" when it cannot be read.
func (s *Systemd) detail(ctx context.Context, unit string) string {
	st, err := s.Status(ctx, unit)
	if err != nil {
		return ""
	}
	d := st.ActiveState + "/" + st.SubState
	if st.Result != "" && st.Result != "success" {
		d += ", result " + st.Result
	}
	return d
}

// Enable enables units persistently (the symlinks their [Install] sections ask for,
// under /etc), one call per unit so that an error names its unit. A unit without an
// [Install] section is left as it is: not an error. An Alias= symlink that exists and
// points elsewhere is not replaced (force=false): that is an error. systemd creates
// .wants/ and .requires/ links with force whatever it is asked, so a link of the
// unit's own name there is always replaced.
func (s *Systemd) Enable(ctx context.Context, units ...string) error {
	c, err := s.get(ctx)
	if err != nil {
		return fmt.Errorf("enable %s: %w", strings.Join(units, " "), err)
	}
	for _, u := range units {
		if _, _, err := c.EnableUnitFilesContext(ctx, []string{u}, false, false); err != nil {
			return fmt.Errorf("enable %s: %w", u, s.lost(c, err))
		}
	}
	return nil
}

// Disable removes the enablement symlinks of units, whatever [Install] section they
// were made from. The unit files must exist.
func (s *Systemd) Disable(ctx context.Context, units ...string) error {
	c, err := s.get(ctx)
	if err != nil {
		return fmt.Errorf("disable %s: %w", strings.Join(units, " "), err)
	}
	for _, u := range units {
		if _, err := c.DisableUnitFilesContext(ctx, []string{u}, false); err != nil {
			return fmt.Errorf("disable %s: %w", u, s.lost(c, err))
		}
	}
	return nil
}

// ResetFailed clears unit's failed state and its start rate limit (and, for a
// service, its restart counter). A unit systemd has not loaded has nothing to reset.
func (s *Systemd) ResetFailed(ctx context.Context, unit string) error {
	c, err := s.get(ctx)
	if err == nil {
		err = s.lost(c, c.ResetFailedUnitContext(ctx, unit))
	}
	if err != nil && !isNoSuchUnit(err) {
		return fmt.Errorf("reset failed %s: %w", unit, err)
	}
	return nil
}

// Status is a unit's state as systemd reports it.
type Status struct {
	Unit        string
	LoadState   string // loaded, not-found, masked, error, ...
	ActiveState string // active, reloading, inactive, failed, activating, deactivating
	SubState    string // running, exited, dead, listening, ...
	Result      string // the last run's result: success, exit-code, signal, ... ("" for targets, slices)
	NRestarts   uint32 // automatic restarts since the last manual start (services only)
	MainPID     uint32 // ExecMainPID, 0 when none (services only)
	ActiveEnter time.Time
}

// Active reports whether the unit is active.
func (st Status) Active() bool { return st.ActiveState == "active" }

// typeInterface is the D-Bus interface that holds a unit type's own properties, ""
// for types without a Result.
func typeInterface(unit string) string {
	switch path.Ext(unit) {
	case ".service":
		return "Service"
	case ".socket":
		return "Socket"
	case ".timer":
		return "Timer"
	case ".path":
		return "Path"
	case ".mount":
		return "Mount"
	case ".automount":
		return "Automount"
	case ".swap":
		return "Swap"
	case ".scope":
		return "Scope"
	}
	return ""
}

// property is one D-Bus property of a unit and where Status stores it.
type property struct {
	iface, name string
	dst         any
}

// Status reads unit's state. A unit without a unit file is reported with LoadState
// "not-found", not as an error. The properties are read one by one: a unit changing
// state meanwhile may show a mix of before and after.
func (s *Systemd) Status(ctx context.Context, unit string) (Status, error) {
	st := Status{Unit: unit}
	c, err := s.get(ctx)
	if err != nil {
		return st, fmt.Errorf("status %s: %w", unit, err)
	}
	var enter uint64
	props := []property{
		{"Unit", "LoadState", &st.LoadState},
		{"Unit", "ActiveState", &st.ActiveState},
		{"Unit", "SubState", &st.SubState},
		{"Unit", "ActiveEnterTimestamp", &enter},
	}
	switch t := typeInterface(unit); t {
	case "":
	case "Service":
		props = append(props, property{t, "Result", &st.Result},
			property{t, "NRestarts", &st.NRestarts}, property{t, "ExecMainPID", &st.MainPID})
	default:
		props = append(props, property{t, "Result", &st.Result})
	}
	if err := s.read(ctx, c, unit, props); err != nil {
		return st, fmt.Errorf("status %s: %w", unit, err)
	}
	if enter != 0 {
		st.ActiveEnter = time.UnixMicro(int64(enter))
	}
	return st, nil
}

// read reads each property of unit into its dst, one by one.
func (s *Systemd) read(ctx context.Context, c *dbus.Conn, unit string, props []property) error {
	for _, p := range props {
		prop, err := c.GetUnitTypePropertyContext(ctx, unit, p.iface, p.name)
		if err == nil {
			err = prop.Value.Store(p.dst)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p.name, s.lost(c, err))
		}
	}
	return nil
}

// memoryUnknown is MemoryCurrent when systemd does not know a unit's memory.
const memoryUnknown = math.MaxUint64

// MemoryCurrent reads the memory that a service's processes use now, in bytes:
// its control group's, as systemd accounts it (MemoryCurrent, what `systemctl
// status` shows as Memory:). known is false when systemd does not account it:
// MemoryAccounting=no, or the service is not running.
func (s *Systemd) MemoryCurrent(ctx context.Context, unit string) (bytes uint64, known bool, err error) {
	if typeInterface(unit) != "Service" {
		return 0, false, fmt.Errorf("memory of %s: only a .service is read", unit)
	}
	c, err := s.get(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("memory of %s: %w", unit, err)
	}
	if err := s.read(ctx, c, unit, []property{{"Service", "MemoryCurrent", &bytes}}); err != nil {
		return 0, false, fmt.Errorf("memory of %s: %w", unit, err)
	}
	if bytes == memoryUnknown {
		return 0, false, nil
	}
	return bytes, true, nil
}

func isSocket(unit string) bool { return path.Ext(unit) == ".socket" }

func isNoSuchUnit(err error) bool {
	var e godbus.Error
	if errors.As(err, &e) {
		return e.Name == errNoSuchUnit
	}
	var pe *godbus.Error
	return errors.As(err, &pe) && pe.Name == errNoSuchUnit
}

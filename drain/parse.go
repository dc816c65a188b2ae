package drain

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// AdminState is HAProxy's administrative state of a server: the srv_admin_state
// bits of `show servers state`.
type AdminState uint8

// The bits of AdminState, as HAProxy defines them (SRV_ADMF_*).
const (
	AdminForcedMaint     AdminState = 0x01 // set server state maint (or disabled in the config)
	AdminInheritedMaint  AdminState = 0x02 // tracks a server in maintenance
	AdminConfigMaint     AdminState = 0x04 // "disabled" in the config
	AdminForcedDrain     AdminState = 0x08 // set server state drain
	AdminInheritedDrain  AdminState = 0x10 // tracks a draining server
	AdminResolutionMaint AdminState = 0x20 // its address did not resolve
	AdminFQDNFromAPI     AdminState = 0x40 // its FQDN was set over the API
)

// Maint reports whether HAProxy sends the server no traffic at all.
func (a AdminState) Maint() bool {
	return a&(AdminForcedMaint|AdminInheritedMaint|AdminResolutionMaint) != 0
}

// Drain reports whether the server gets no new sessions but those that persist on
// it (stickiness).
func (a AdminState) Drain() bool { return a&(AdminForcedDrain|AdminInheritedDrain) != 0 }

// String is "maint", "drain" or "ready", as `set server ... state` names them.
func (a AdminState) String() string {
	switch {
	case a.Maint():
		return "maint"
	case a.Drain():
		return "drain"
	}
	return "ready"
}

// OperState is HAProxy's operational state of a server: srv_op_state of `show
// servers state`, what its health checks say.
type OperState uint8

// The values of OperState (SRV_ST_*).
const (
	OperStopped  OperState = 0 // down
	OperStarting OperState = 1 // up, warming up (slowstart)
	OperRunning  OperState = 2 // up
	OperStopping OperState = 3 // up, soft-stopping
)

func (o OperState) String() string {
	switch o {
	case OperStopped:
		return "stopped"
	case OperStarting:
		return "starting"
	case OperRunning:
		return "running"
	case OperStopping:
		return "stopping"
	}
	return "state " + strconv.Itoa(int(o))
}

// ServerState is what HAProxy says of one server.
type ServerState struct {
	Backend, Server string
	Admin           AdminState // maint, drain or ready, as set over the API or config
	Oper            OperState  // up or down, as the health checks say
	Status          string     // show stat's status: "UP", "DOWN", "DRAIN", "MAINT", "no check", "UP 1/2"...
	Sessions        int        // current sessions on the server (scur)
	Queued          int        // requests queued for this server (qcur)
}

// statRow is the part of one `show stat` line that drain uses.
type statRow struct {
	Backend, Server, Status string
	Sessions, Queued        int
	Total                   int64  // stot: sessions ever sent to the server (one per HTTP request)
	Requests                int64  // req_tot: HTTP requests it answered; 0 where HAProxy does not count them
	LastSess                int    // lastsess: seconds since its last session; -1 for none or not reported
	Check                   string // check_status: the last health check's result, "INI" before the first; "" unchecked
}

// serverStateRow is the part of one `show servers state` line that drain uses.
type serverStateRow struct {
	Backend, Server string
	Admin           AdminState
	Oper            OperState
}

// errNoServer is returned by the finders when a table has no row for the server.
var errNoServer = errors.New("no such server")

// parseStat parses HAProxy's answer to `show stat`: a header line "# pxname,svname,
// ..." and then CSV lines. Columns are found by name, so that versions with other
// columns parse alike. Any other first line is HAProxy's error ("No such proxy.").
func parseStat(answer string) ([]statRow, error) {
	first, rest, _ := strings.Cut(strings.TrimLeft(answer, "\r\n"), "\n")
	names, ok := strings.CutPrefix(strings.TrimRight(first, "\r"), "# ")
	if !ok {
		return nil, answerError(answer)
	}
	col := map[string]int{}
	for i, n := range strings.Split(names, ",") {
		if _, dup := col[n]; n != "" && !dup {
			col[n] = i
		}
	}
	need := 0 // fields a line must have
	for _, n := range []string{"pxname", "svname", "qcur", "scur", "status"} {
		i, ok := col[n]
		if !ok {
			return nil, fmt.Errorf("show stat: no %s column in the header", n)
		}
		need = max(need, i+1)
	}
	r := csv.NewReader(strings.NewReader(rest))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = true
	var rows []statRow
	for {
		rec, err := r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("show stat: %v", err)
		}
		line, _ := r.FieldPos(0)
		line++ // the header was line 1
		if len(rec) < need {
			return nil, fmt.Errorf("show stat: line %d has %d fields, too few", line, len(rec))
		}
		field := func(n string) string { return rec[col[n]] }
		row := statRow{Backend: field("pxname"), Server: field("svname"), Status: field("status")}
		if row.Server == "FRONTEND" || row.Server == "BACKEND" {
			rows = append(rows, row)
			continue
		}
		if row.Sessions, err = count(field("scur")); err != nil {
			return nil, fmt.Errorf("show stat: line %d: scur: %v", line, err)
		}
		if row.Queued, err = count(field("qcur")); err != nil {
			return nil, fmt.Errorf("show stat: line %d: qcur: %v", line, err)
		}
		if err := row.parseCounters(col, rec); err != nil {
			return nil, fmt.Errorf("show stat: line %d: %v", line, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// parseCounters reads the columns that older or other HAProxies may lack: stot,
// req_tot and lastsess. A missing column or an empty field reads as none.
func (row *statRow) parseCounters(col map[string]int, rec []string) error {
	field := func(n string) string {
		if i, ok := col[n]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var err error
	if row.Total, err = count64(field("stot")); err != nil {
		return fmt.Errorf("stot: %v", err)
	}
	if row.Requests, err = count64(field("req_tot")); err != nil {
		return fmt.Errorf("req_tot: %v", err)
	}
	row.Check = field("check_status")
	row.LastSess = -1
	if s := field("lastsess"); s != "" && s != "-1" {
		if row.LastSess, err = count(s); err != nil {
			return fmt.Errorf("lastsess: %v", err)
		}
	}
	return nil
}

// parseServersState parses HAProxy's answer to `show servers state [<backend>]`:
// a format version line "1", a header "# be_id be_name ...", then one line of
// space-separated fields per server. Any other first line is HAProxy's error
// ("Can't find backend.").
func parseServersState(answer string) ([]serverStateRow, error) {
	lines := strings.Split(strings.TrimLeft(answer, "\r\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "# ") {
		return nil, answerError(answer)
	}
	if v := strings.TrimSpace(lines[0]); v != "1" {
		return nil, fmt.Errorf("show servers state: format version %q; this baton reads version 1", clip(v))
	}
	col := map[string]int{}
	for i, n := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		if _, dup := col[n]; !dup {
			col[n] = i
		}
	}
	need := []string{"be_name", "srv_name", "srv_op_state", "srv_admin_state"}
	for _, n := range need {
		if _, ok := col[n]; !ok {
			return nil, fmt.Errorf("show servers state: no %s column in the header", n)
		}
	}
	var rows []serverStateRow
	for i, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		line := i + 3
		for _, n := range need {
			if col[n] >= len(f) {
				return nil, fmt.Errorf("show servers state: line %d has %d fields, too few", line, len(f))
			}
		}
		op, err := strconv.ParseUint(f[col["srv_op_state"]], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("show servers state: line %d: srv_op_state %q is not a number", line, clip(f[col["srv_op_state"]]))
		}
		adm, err := strconv.ParseUint(f[col["srv_admin_state"]], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("show servers state: line %d: srv_admin_state %q is not a number", line, clip(f[col["srv_admin_state"]]))
		}
		rows = append(rows, serverStateRow{
			Backend: f[col["be_name"]],
			Server:  f[col["srv_name"]],
			Oper:    OperState(op),
			Admin:   AdminState(adm),
		})
	}
	return rows, nil
}

// findStat returns the row of backend/server.
func findStat(rows []statRow, backend, server string) (statRow, error) {
	for _, r := range rows {
		if r.Backend == backend && r.Server == server {
			return r, nil
		}
	}
	return statRow{}, errNoServer
}

// findServerState returns the row of backend/server.
func findServerState(rows []serverStateRow, backend, server string) (serverStateRow, error) {
	for _, r := range rows {
		if r.Backend == backend && r.Server == server {
			return r, nil
		}
	}
	return serverStateRow{}, errNoServer
}

// count parses a non-negative counter; HAProxy leaves unset counters empty.
func count(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count", clip(s))
	}
	return n, nil
}

// count64 parses a non-negative 64-bit counter, such as a total since HAProxy
// started; empty is 0.
func count64(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count", clip(s))
	}
	return n, nil
}

// answerError turns an answer that is not the table asked for into an error
// quoting HAProxy's first line, such as "No such proxy.".
func answerError(answer string) error {
	msg := strings.TrimSpace(answer)
	if msg == "" {
		return errors.New("HAProxy answered nothing")
	}
	first, _, _ := strings.Cut(msg, "\n")
	return fmt.Errorf("HAProxy answered %q", clip(strings.TrimSpace(first)))
}

// clip shortens outside text for an error message.
func clip(s string) string {
	const n = 200
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

package drain

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The testdata files are HAProxy 2.6's answers, as read from its socket: backend
// web with server a (down, checked) and b (drained, unchecked).
func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const statHeader = "# pxname,svname,qcur,qmax,scur,smax,status,\n"

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		want    []statRow
		wantErr string
	}{
		{
			name:   "haproxy 2.6, one backend",
			answer: readTestdata(t, "show_stat.txt"),
			want: []statRow{
				{Backend: "web", Server: "a", Status: "DOWN", LastSess: -1, Check: "L4CON"},
				{Backend: "web", Server: "b", Status: "DRAIN", LastSess: -1},
			},
		},
		{
			name:   "haproxy 2.6, everything",
			answer: readTestdata(t, "show_stat_all.txt"),
			want: []statRow{
				{Backend: "fe", Server: "FRONTEND", Status: "OPEN"},
				{Backend: "web", Server: "a", Status: "DOWN", LastSess: -1, Check: "L4CON"},
				{Backend: "web", Server: "b", Status: "DRAIN", LastSess: -1},
				{Backend: "web", Server: "BACKEND", Status: "DOWN"},
			},
		},
		{
			name:   "sessions and queue",
			answer: statHeader + "web,a,2,5,7,9,UP,\nweb,b,0,0,1,1,UP 1/2,\n\n",
			want: []statRow{
				{Backend: "web", Server: "a", Status: "UP", Sessions: 7, Queued: 2, LastSess: -1},
				{Backend: "web", Server: "b", Status: "UP 1/2", Sessions: 1, LastSess: -1},
			},
		},
		{
			name:   "columns in another order, more of them, no trailing comma",
			answer: "# status,scur,svname,x,pxname,qcur\nMAINT,3,s1,zz,be,0\n",
			want:   []statRow{{Backend: "be", Server: "s1", Status: "MAINT", Sessions: 3, LastSess: -1}},
		},
		{
			name:   "quoted field holding a comma",
			answer: "# pxname,svname,check_desc,qcur,scur,status\nweb,a,\"Layer7 wrong status, 503\",0,4,DOWN\n",
			want:   []statRow{{Backend: "web", Server: "a", Status: "DOWN", Sessions: 4, LastSess: -1}},
		},
		{
			name:   "empty counters are 0",
			answer: statHeader + "web,a,,,,,no check,\n",
			want:   []statRow{{Backend: "web", Server: "a", Status: "no check", LastSess: -1}},
		},
		{
			name:   "CRLF line ends",
			answer: "# pxname,svname,qcur,scur,status\r\nweb,a,0,1,UP\r\n\r\n",
			want:   []statRow{{Backend: "web", Server: "a", Status: "UP", Sessions: 1, LastSess: -1}},
		},
		{
			name:   "totals and the last session",
			answer: "# pxname,svname,qcur,scur,stot,status,req_tot,lastsess,check_status\nweb,blue,0,2,9000000000,UP,17,3,L7OK\nweb,green,0,0,0,DRAIN,,-1,INI\nweb,BACKEND,0,2,9000000000,UP,17,3,\n",
			want: []statRow{
				{Backend: "web", Server: "blue", Status: "UP", Sessions: 2, Total: 9000000000, Requests: 17, LastSess: 3, Check: "L7OK"},
				{Backend: "web", Server: "green", Status: "DRAIN", LastSess: -1, Check: "INI"},
				{Backend: "web", Server: "BACKEND", Status: "UP"},
			},
		},
		{name: "header only", answer: statHeader + "\n", want: nil},
		{name: "no such proxy", answer: "No such proxy.\n\n", wantErr: `HAProxy answered "No such proxy."`},
		{name: "permission denied", answer: "Permission denied\n\n", wantErr: `HAProxy answered "Permission denied"`},
		{name: "empty answer", answer: "", wantErr: "HAProxy answered nothing"},
		{name: "blank answer", answer: "\n\n", wantErr: "HAProxy answered nothing"},
		{name: "header without scur", answer: "# pxname,svname,qcur,status\nweb,a,0,UP\n", wantErr: "no scur column"},
		{name: "short line", answer: statHeader + "web,a,0\n", wantErr: "line 2 has 3 fields, too few"},
		{name: "short line after a blank one", answer: statHeader + "web,a,0,0,0,0,UP,\n\nweb,b\n", wantErr: "line 4 has 2 fields"},
		{name: "negative sessions", answer: statHeader + "web,a,0,0,-1,0,UP,\n", wantErr: `scur: "-1" is not a count`},
		{name: "sessions not a number", answer: statHeader + "web,a,0,0,lots,0,UP,\n", wantErr: `scur: "lots" is not a count`},
		{name: "queue not a number", answer: statHeader + "web,a,x,0,0,0,UP,\n", wantErr: `qcur: "x" is not a count`},
		{name: "negative total", answer: "# pxname,svname,qcur,scur,stot,status\nweb,a,0,0,-5,UP\n", wantErr: `line 2: stot: "-5" is not a count`},
		{name: "requests not a number", answer: "# pxname,svname,qcur,scur,req_tot,status\nweb,a,0,0,1e3,UP\n", wantErr: `req_tot: "1e3" is not a count`},
		{name: "last session not a number", answer: "# pxname,svname,qcur,scur,lastsess,status\nweb,a,0,0,soon,UP\n", wantErr: `lastsess: "soon" is not a count`},
		{name: "last session below -1", answer: "# pxname,svname,qcur,scur,lastsess,status\nweb,a,0,0,-2,UP\n", wantErr: `lastsess: "-2" is not a count`},
		{name: "total past 64 bits", answer: "# pxname,svname,qcur,scur,stot,status\nweb,a,0,0,99999999999999999999,UP\n", wantErr: `stot: "99999999999999999999" is not a count`},
		{name: "huge count", answer: statHeader + "web,a,0,0,99999999999999999999999,0,UP,\n", wantErr: "is not a count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.answer)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

const serversStateHeader = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n"

func TestParseServersState(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		want    []serverStateRow
		wantErr string
	}{
		{
			name:   "haproxy 2.6",
			answer: readTestdata(t, "show_servers_state.txt"),
			want: []serverStateRow{
				{Backend: "web", Server: "a", Oper: OperStopped, Admin: 0},
				{Backend: "web", Server: "b", Oper: OperRunning, Admin: AdminForcedDrain},
			},
		},
		{
			name:   "maint, config maint, resolution",
			answer: serversStateHeader + "3 web 1 a 10.0.0.1 0 1 1\n3 web 2 b 10.0.0.2 0 5 1\n3 web 3 c - 0 32 1\n\n",
			want: []serverStateRow{
				{Backend: "web", Server: "a", Admin: AdminForcedMaint},
				{Backend: "web", Server: "b", Admin: AdminForcedMaint | AdminConfigMaint},
				{Backend: "web", Server: "c", Admin: AdminResolutionMaint},
			},
		},
		{
			name:   "columns in another order",
			answer: "1\n# srv_admin_state srv_name be_name srv_op_state\n8 s be 3\n",
			want:   []serverStateRow{{Backend: "be", Server: "s", Admin: AdminForcedDrain, Oper: OperStopping}},
		},
		{
			name:   "tabs, CRLF and extra fields",
			answer: "1\r\n# be_name\tsrv_name srv_op_state srv_admin_state\r\nweb\ta 2 0 extra more\r\n",
			want:   []serverStateRow{{Backend: "web", Server: "a", Oper: OperRunning}},
		},
		{name: "no servers", answer: serversStateHeader + "\n", want: nil},
		{name: "unknown backend", answer: "Can't find backend.\n\n", wantErr: `HAProxy answered "Can't find backend."`},
		{name: "empty", answer: "", wantErr: "HAProxy answered nothing"},
		{name: "version only", answer: "1\n", wantErr: `HAProxy answered "1"`},
		{name: "other version", answer: "2\n# be_name srv_name srv_op_state srv_admin_state\n", wantErr: `format version "2"`},
		{name: "header without admin state", answer: "1\n# be_name srv_name srv_op_state\nweb a 2\n", wantErr: "no srv_admin_state column"},
		{name: "short line", answer: serversStateHeader + "3 web 1 a 10.0.0.1\n", wantErr: "line 3 has 5 fields, too few"},
		{name: "admin state not a number", answer: serversStateHeader + "3 web 1 a 10.0.0.1 2 x 1\n", wantErr: `srv_admin_state "x" is not a number`},
		{name: "admin state too big", answer: serversStateHeader + "3 web 1 a 10.0.0.1 2 256 1\n", wantErr: `srv_admin_state "256"`},
		{name: "op state negative", answer: serversStateHeader + "3 web 1 a 10.0.0.1 -1 0 1\n", wantErr: `srv_op_state "-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServersState(tt.answer)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestAdminState(t *testing.T) {
	tests := []struct {
		a            AdminState
		maint, drain bool
		want         string
	}{
		{0, false, false, "ready"},
		{AdminForcedDrain, false, true, "drain"},
		{AdminInheritedDrain, false, true, "drain"},
		{AdminForcedMaint, true, false, "maint"},
		{AdminForcedMaint | AdminConfigMaint, true, false, "maint"},
		{AdminInheritedMaint | AdminForcedDrain, true, true, "maint"},
		{AdminResolutionMaint, true, false, "maint"},
		{AdminFQDNFromAPI, false, false, "ready"},
	}
	for _, tt := range tests {
		if tt.a.Maint() != tt.maint || tt.a.Drain() != tt.drain || tt.a.String() != tt.want {
			t.Errorf("AdminState(%#x): maint %v drain %v %q, want %v %v %q",
				uint8(tt.a), tt.a.Maint(), tt.a.Drain(), tt.a, tt.maint, tt.drain, tt.want)
		}
	}
	if got := OperState(9).String(); got != "state 9" {
		t.Errorf("OperState(9) = %q", got)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"web", "web-01", "be_api.v2", "srv:8080", "A9"} {
		if err := checkName("server", ok); err != nil {
			t.Errorf("checkName(%q) = %v", ok, err)
		}
	}
	// anything that would change the command sent
	for _, bad := range []string{"", "a b", "a;disable frontend fe", "a\nshow info", "a/b", "é", "a\x00"} {
		if err := checkName("server", bad); err == nil {
			t.Errorf("checkName(%q) = nil, want an error", bad)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, ok := range []string{"/run/haproxy/admin.sock", "127.0.0.1:9999", "[::1]:9999", "lb.example.com:9999"} {
		if err := checkAddr(ok); err != nil {
			t.Errorf("checkAddr(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "admin.sock", "run/admin.sock", "127.0.0.1", ":9999", "host:"} {
		if err := checkAddr(bad); err == nil {
			t.Errorf("checkAddr(%q) = nil, want an error", bad)
		}
	}
}

// FuzzParseStat checks that no answer makes the parser panic, and that what it
// accepts is sane: counts never negative, and a server it lists can be found.
func FuzzParseStat(f *testing.F) {
	f.Add(readTestdata(f, "show_stat.txt"))
	f.Add(readTestdata(f, "show_stat_all.txt"))
	f.Add(statHeader + "web,a,2,5,7,9,UP,\n")
	f.Add("# pxname,svname,check_desc,qcur,scur,status\nweb,a,\"x, \"\"y\"\"\",0,4,DOWN\n")
	f.Add("No such proxy.\n\n")
	f.Add("# \n,,,\n")
	f.Add("# pxname,svname,qcur,scur,stot,status,req_tot,lastsess\nweb,blue,0,2,9000000000,UP,17,3\nweb,green,0,0,0,DRAIN,,-1\n")
	f.Fuzz(func(t *testing.T, answer string) {
		rows, err := parseStat(answer)
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.Sessions < 0 || r.Queued < 0 || r.Total < 0 || r.Requests < 0 || r.LastSess < -1 {
				t.Fatalf("negative count in %+v", r)
			}
			if _, err := findStat(rows, r.Backend, r.Server); err != nil {
				t.Fatalf("listed %s/%s is not found", r.Backend, r.Server)
			}
		}
	})
}

// FuzzParseServersState checks that no answer makes the parser panic, and that
// the servers it lists can be found.
func FuzzParseServersState(f *testing.F) {
	f.Add(readTestdata(f, "show_servers_state.txt"))
	f.Add(serversStateHeader + "3 web 1 a 10.0.0.1 0 1 1\n")
	f.Add("Can't find backend.\n\n")
	f.Add("1\n# \n\n")
	f.Fuzz(func(t *testing.T, answer string) {
		rows, err := parseServersState(answer)
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.Backend == "" || r.Server == "" {
				t.Fatalf("empty name in %+v", r)
			}
			if _, err := findServerState(rows, r.Backend, r.Server); err != nil {
				t.Fatalf("listed %s/%s is not found", r.Backend, r.Server)
			}
		}
	})
}

package analysis

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/baton-fleet/baton/internal/redact"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string // the series and values, or the error
	}{
		{"vector", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"b":"2"},"value":[1.5,"0.25"]},{"metric":{"__name__":"up","a":"1"},"value":[1.5,"1"]}]}}`,
			`up{a="1"}=1 {b="2"}=0.25`},
		{"empty vector", 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`, ``},
		{"scalar", 200, `{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}`, `{}=3`},
		{"NaN", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`, `{}=NaN`},
		{"bad query", 400, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}`,
			`error: HTTP 400: bad_data: invalid parameter "query": 1:5: parse error`},
		{"timeout", 503, `{"status":"error","errorType":"timeout","error":"query timed out"}`, `error: HTTP 503: timeout: query timed out`},
		{"proxy page", 502, `<html>Bad Gateway</html>`, `error: HTTP 502 Bad Gateway`},
		{"not JSON", 200, `hello`, `error: not an answer of Prometheus' query API: invalid character 'h' looking for beginning of value`},
		{"no status", 200, `{}`, `error: answer status "", not success`},
		{"matrix", 200, `{"status":"success","data":{"resultType":"matrix","result":[]}}`, `error: the query returns a "matrix", not an instant vector or a scalar`},
		{"string", 200, `{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`, `error: the query returns a "string", not an instant vector or a scalar`},
		{"value not a number", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}`, `error: read the vector: strconv.ParseFloat: parsing "abc": invalid syntax`},
		{"value not a pair", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":"1"}]}}`, `error: read the vector: json: cannot unmarshal string into Go struct field .value of type [2]json.Unmarshaler`},
		{"null sample", 200, `{"status":"success","data":{"resultType":"vector","result":[null]}}`, `error: the query returns native histograms, not numbers: use histogram_quantile or a function that makes numbers`},
		{"histogram", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1","buckets":[]}]}]}}`,
			`error: the query returns native histograms, not numbers: use histogram_quantile or a function that makes numbers`},
		{"scalar garbage", 200, `{"status":"success","data":{"resultType":"scalar","result":{}}}`, `error: read the scalar: json: cannot unmarshal object into Go value of type [2]interface {}`},
		{"long error on one line", 422, `{"status":"error","errorType":"execution","error":"` + strings.Repeat("line\\n", 200) + `"}`,
			`error: HTTP 422: execution: ` + strings.TrimSuffix(strings.Repeat("line ", 103), " ")[:512] + `…`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseAnswer(tc.status, []byte(tc.body))
			got := vectorText(v)
			if err != nil {
				got = "error: " + err.Error()
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func vectorText(v Vector) string {
	var parts []string
	for _, s := range v {
		parts = append(parts, s.String()+"="+num(s.Value))
	}
	return strings.Join(parts, " ")
}

// FuzzParseAnswer: no answer makes ParseAnswer panic; an error is one line.
func FuzzParseAnswer(f *testing.F) {
	f.Add(200, []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1.5,"0.25"]}]}}`))
	f.Add(200, []byte(`{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}`))
	f.Add(400, []byte(`{"status":"error","errorType":"bad_data","error":"x"}`))
	f.Add(200, []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1","buckets":[[0,"1","2","1"]]}]}]}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		v, err := ParseAnswer(status, body)
		if err != nil {
			if v != nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ParseAnswer = %v, %q", v, err)
			}
			return
		}
		for _, s := range v {
			_ = s.String()
		}
	})
}

// TestClientSendsTokenAndHidesIt: the bearer token is read from its file at each
// query (a rotated token is used at once) and appears in no error.
func TestClientSendsTokenAndHidesIt(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		if r.URL.Path != "/prom/api/v1/query" || r.FormValue("query") != "up" {
			http.Error(w, "wrong request "+r.URL.Path, http.StatusNotFound)
			return
		}
		w.Header().Set("Location", "http://elsewhere.example/")
		w.WriteHeader(http.StatusFound)
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(tokenFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewClient(Server{URL: srv.URL + "/prom/", TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write("s3cret-one\n")
	_, err1 := c.Query(context.Background(), "up")
	write("s3cret-two")
	_, err2 := c.Query(context.Background(), "up")
	if len(got) != 2 || got[0] != "Bearer s3cret-one" || got[1] != "Bearer s3cret-two" {
		t.Errorf("Authorization headers = %q", got)
	}
	for _, err := range []error{err1, err2} {
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "HTTP 302 Found") {
			t.Errorf("error of a redirect = %v; want HTTP 302 Found, without the token", err)
		}
	}
	os.Chmod(tokenFile, 0o644)
	if _, err := c.Query(context.Background(), "up"); err == nil || !strings.Contains(err.Error(), "can be read by any user (mode 0644); run chmod o-rwx") || len(got) != 2 {
		t.Errorf("query with a token file any user can read = %v (%d requests)", err, len(got))
	}
	os.Remove(tokenFile)
	if _, err := c.Query(context.Background(), "up"); err == nil || !strings.Contains(err.Error(), "read tokenFile") || len(got) != 2 {
		t.Errorf("query without its token file = %v (%d requests)", err, len(got))
	}
}

// TestClientBoundsAnswer: an answer past MaxAnswer is an error, not an unbounded read.
func TestClientBoundsAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[`))
		series := `{"metric":{"a":"` + strings.Repeat("x", 1000) + `"},"value":[1,"1"]},`
		for range MaxAnswer/len(series) + 1 {
			w.Write([]byte(series))
		}
		w.Write([]byte(`{"metric":{},"value":[1,"1"]}]}}`))
	}))
	defer srv.Close()
	c, err := NewClient(Server{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Query(context.Background(), "up"); err == nil || !strings.Contains(err.Error(), "over 4194304 bytes") {
		t.Errorf("an answer over MaxAnswer: %v", err)
	}
}

func TestNewClientRefuses(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		s    Server
		want string
	}{
		{Server{URL: "ftp://p:9090"}, "prometheus url ftp://p:9090: want http(s)://host[:port][/path], without credentials"},
		{Server{URL: "http://u:pw@p:9090"}, "prometheus url http://p:9090: want http(s)://host[:port][/path], without credentials"},
		{Server{URL: "https://p", CAFile: filepath.Join(dir, "missing")}, "prometheus caFile: open " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{Server{URL: "https://p", CAFile: notPEM}, "prometheus caFile " + notPEM + " holds no PEM certificate"},
	} {
		if _, err := NewClient(tc.s); err == nil || err.Error() != tc.want {
			t.Errorf("NewClient(%+v) = %v, want %s", tc.s, err, tc.want)
		}
	}
}

// TestClientHTTPSWithCAFile: https to a server whose CA is in caFile works; without
// it the system's CAs refuse the server.
func TestClientHTTPSWithCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pemOf(srv.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Server{URL: srv.URL, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Query(context.Background(), "7"); err != nil || len(v) != 1 || v[0].Value != 7 {
		t.Errorf("query over https with caFile = %v, %v", v, err)
	}
	sys, _ := NewClient(Server{URL: srv.URL})
	defer sys.Close()
	if _, err := sys.Query(context.Background(), "7"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("query over https with the system's CAs = %v, want a certificate error", err)
	}
}

func TestGateText(t *testing.T) {
	alerts := func(names ...string) Vector {
		var v Vector
		for _, n := range names {
			v = append(v, Series{Metric: model.Metric{"__name__": "ALERTS", "alertname": model.LabelValue(n), "alertstate": "firing", "severity": "page", "instance": "db-02"}, Value: 1})
		}
		return v
	}
	for _, tc := range []struct {
		answer answerOrErr
		want   string
	}{
		{answerOrErr{v: Vector{}}, "open"},
		{answerOrErr{v: alerts("DiskFull")}, `held: ALERTS{alertname="DiskFull",instance="db-02"}`},
		{answerOrErr{v: alerts("G", "F", "E", "D", "C", "B", "A")}, `held: ALERTS{alertname="A",instance="db-02"}, ALERTS{alertname="B",instance="db-02"}, ALERTS{alertname="C",instance="db-02"}, ALERTS{alertname="D",instance="db-02"}, ALERTS{alertname="E",instance="db-02"} and 2 more`},
		{answerOrErr{v: alerts(strings.Repeat("X", 300))}, `held: ALERTS{alertname="` + strings.Repeat("X", 182) + `…`},
		{down, "held: " + down.err.Error()},
	} {
		q := `ALERTS{alertstate="firing",severity="page"}`
		g := NewGate(spec.PrometheusGate{Query: q, Timeout: yamldoc.Duration(time.Second)}, script{q: {tc.answer}})
		if got := g.Check(context.Background()).String(); got != tc.want {
			t.Errorf("gate:\n  %s\nwant\n  %s", got, tc.want)
		}
	}
}

func TestFixedLabels(t *testing.T) {
	for q, want := range map[string]string{
		`ALERTS{alertstate="firing",severity="page"}`:                      "alertstate severity",
		`ALERTS{alertstate="firing"} or ALERTS{alertstate="firing",a="b"}`: "alertstate",
		`up{job=~"api"} == 0`:                   "",
		`sum by (instance) (up{job="api"}) < 1`: "job",
		`not promql {`:                          "",
	} {
		var names []string
		for k := range fixedLabels(q) {
			names = append(names, k)
		}
		if got := strings.Join(slices.Sorted(slices.Values(names)), " "); got != want {
			t.Errorf("fixedLabels(%q) = %q, want %q", q, got, want)
		}
	}
}

func pemOf(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }

// TestForServicesSharesClients: checks that name one server share a client, across
// services; a service without analysis adds nothing; a server that cannot be used is
// an error naming the service and the check.
func TestForServicesSharesClients(t *testing.T) {
	check := func(name, url, ca string) spec.AnalysisCheck {
		return spec.AnalysisCheck{Name: name, Prometheus: &spec.PrometheusCheck{URL: url, Query: "up", Max: ptr(1), CAFile: ca}, Failures: 1}
	}
	api := &spec.Analysis{Window: yamldoc.Duration(time.Minute), Checks: []spec.AnalysisCheck{check("a", "http://p1:9090", ""), check("b", "http://p2:9090", "")}}
	db := &spec.Analysis{Window: yamldoc.Duration(3 * time.Minute), Checks: []spec.AnalysisCheck{check("a", "http://p1:9090", "")}}
	run, closeRun, err := ForServices(map[string]*spec.Analysis{"db": db, "api": api, "cron": nil}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRun()
	var got []string
	for _, c := range run.Checks {
		got = append(got, fmt.Sprintf("%s/%s %v", c.Service, c.Name, c.Window))
	}
	if strings.Join(got, ", ") != "api/a 1m0s, api/b 1m0s, db/a 3m0s" || run.Window != 3*time.Minute {
		t.Errorf("checks = %v, window %v", got, run.Window)
	}
	if run.Checks[0].Server != run.Checks[2].Server || run.Checks[0].Server == run.Checks[1].Server {
		t.Error("the checks of one server do not share its client")
	}
	if none, _, err := ForServices(map[string]*spec.Analysis{"cron": nil}, nil); none != nil || err != nil {
		t.Errorf("ForServices without analysis = %v, %v", none, err)
	}
	missing := filepath.Join(t.TempDir(), "ca.pem")
	db.Checks = append(db.Checks, check("d", "https://p3", missing))
	if _, _, err := ForServices(map[string]*spec.Analysis{"db": db}, nil); err == nil || !strings.HasPrefix(err.Error(), "service db: analysis check d: prometheus caFile: open "+missing) {
		t.Errorf("ForServices with a missing caFile = %v", err)
	}
}

// TestEvaluateBoundedByTimeout: a Prometheus that does not answer costs one check's
// timeout, and is no data, judged by noData: here a failure.
func TestEvaluateBoundedByTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := NewClient(Server{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := Check{Name: "errors", Query: "up", Max: ptr(1), NoData: spec.NoDataFail, Timeout: 200 * time.Millisecond, Failures: 2, Server: c}
	start := time.Now()
	s := Evaluate(context.Background(), check, 1, start)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("evaluation took %v with a timeout of 200ms", took)
	}
	want := "errors: no data (prometheus unreachable: " + srv.URL + ": no answer within the timeout: context deadline exceeded; noData: fail) (2 of 2 failures)"
	if s.Verdict != Fail || !s.Unanswered || s.Failures != 2 || s.String() != want {
		t.Errorf("sample = %s (%v, %d failures), want %s", s, s.Verdict, s.Failures, want)
	}
}

// TestQueryErrorSaysWhy: a failed query's error begins with why there is no answer:
// nothing reached (a closed port), what answered said no (HTTP 503, a page that is
// not the query API), or the query was not sent (its token file). The local API shows
// it as it is.
func TestQueryErrorSaysWhy(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"status":"error","errorType":"timeout","error":"query timed out"}`))
	}))
	defer busy.Close()
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>login</html>")) }))
	defer html.Close()
	for _, tc := range []struct {
		s    Server
		want string
	}{
		{Server{URL: closed.URL}, "prometheus unreachable: " + closed.URL + `: Post "` + closed.URL + `/api/v1/query": dial tcp `},
		{Server{URL: busy.URL}, "prometheus error: " + busy.URL + ": HTTP 503: timeout: query timed out"},
		{Server{URL: html.URL}, "prometheus error: " + html.URL + ": not an answer of Prometheus' query API: "},
		{Server{URL: busy.URL, TokenFile: filepath.Join(t.TempDir(), "none")}, "prometheus not asked: " + busy.URL + ": read tokenFile: open "},
	} {
		c, err := NewClient(tc.s)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Query(context.Background(), "up")
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("query of %s = %v, want %s...", tc.s.URL, err, tc.want)
		} else if shown := redact.Text(err.Error()); shown != err.Error() {
			t.Errorf("the local API would show %q as %q", err, shown) // it redacts every text it serves
		}
		c.Close()
	}
}

package analysis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	"github.com/baton-fleet/baton/internal/redact"
)

// Limits of a query.
const (
	// MaxAnswer bounds the bytes of an answer read: a query that returns more (a
	// gate's query over a fleet of alerts, say) is an error, not an unbounded read.
	MaxAnswer = 4 << 20
	// DialTimeout bounds connecting to Prometheus, within the query's own timeout.
	DialTimeout = 3 * time.Second
)

// Server is a Prometheus server and how to reach it.
type Server struct {
	URL       string // base URL, http or https, without credentials
	TokenFile string // "" or a file holding a bearer token, read at each query
	CAFile    string // "" for the system's CAs, or a PEM file of the CA to trust instead
}

// Client asks one Prometheus server instant queries over its HTTP API.
type Client struct {
	endpoint  string // <base>/api/v1/query
	shown     string // the base URL as errors show it
	tokenFile string
	http      *http.Client
}

// NewClient returns a client of s. It reads s.CAFile now; the token file is read at
// each query, so that a rotated token is used without a restart.
func NewClient(s Server) (*Client, error) {
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("prometheus url %s: want http(s)://host[:port][/path], without credentials", redact.URL(s.URL))
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("prometheus caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("prometheus caFile %s holds no PEM certificate", s.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: DialTimeout}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   DialTimeout,
		ResponseHeaderTimeout: time.Minute, // the query's context is the real bound
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       time.Minute,
	}
	return &Client{
		endpoint:  strings.TrimSuffix(u.String(), "/") + "/api/v1/query",
		shown:     redact.ParsedURL(u),
		tokenFile: s.TokenFile,
		http: &http.Client{
			Transport: transport,
			// A redirect is not followed: it would carry the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// What a failed query's error begins with: why Prometheus gave no answer.
const (
	errUnreachable = "prometheus unreachable" // no connection, no TLS handshake, or no answer in time
	errAnswer      = "prometheus error"       // what answered said no, or not in the query API's terms
	errNotAsked    = "prometheus not asked"   // the query could not be sent: its token
)

// Query runs an instant query at the server's present time, bounded by ctx. Its error
// says why there is no answer, names the server (redacted), and never holds the
// token: "prometheus unreachable: http://prometheus:9090: ...".
func (c *Client) Query(ctx context.Context, query string) (Vector, error) {
	v, why, err := c.query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %s", why, c.shown, redact.Text(err.Error()))
	}
	return v, nil
}

// query asks the server; on error it also says which of errUnreachable, errAnswer or
// errNotAsked it is.
func (c *Client) query(ctx context.Context, query string) (Vector, string, error) {
	form := url.Values{"query": {query}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(form))
	if err != nil {
		return nil, errNotAsked, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.tokenFile != "" {
		token, err := readToken(c.tokenFile)
		if err != nil {
			return nil, errNotAsked, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errUnreachable, fmt.Errorf("no answer within the timeout: %w", ctx.Err())
		}
		return nil, errUnreachable, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, errUnreachable, fmt.Errorf("no whole answer within the timeout: %w", ctx.Err())
	case err != nil:
		return nil, errUnreachable, fmt.Errorf("read the answer: %w", err)
	case len(body) > MaxAnswer:
		return nil, errAnswer, fmt.Errorf("the answer is over %d bytes", MaxAnswer)
	}
	v, err := ParseAnswer(resp.StatusCode, body)
	if err != nil {
		return nil, errAnswer, err
	}
	return v, "", nil
}

// readToken reads a bearer token from path, a regular file that other users cannot
// read (the rule of the agent's own secret files).
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read tokenFile: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	switch {
	case err != nil:
		return "", fmt.Errorf("read tokenFile: %w", err)
	case !info.Mode().IsRegular():
		return "", fmt.Errorf("tokenFile %s is not a regular file", path)
	case info.Mode().Perm()&0o007 != 0:
		return "", fmt.Errorf("tokenFile %s can be read by any user (mode %04o); run chmod o-rwx %s", path, info.Mode().Perm(), path)
	}
	token, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read tokenFile: %w", err)
	}
	return strings.TrimSpace(string(token)), nil
}

// Vector is the answer to an instant query: one number per series (a scalar is one
// series without labels).
type Vector []Series

// Series is one series of an answer and its value.
type Series struct {
	Metric model.Metric
	Value  float64
}

// String writes the series as PromQL does, its labels sorted: up{instance="db-02",job="node"}.
func (s Series) String() string { return seriesString(s.Metric, nil) }

// numbers is v without the series whose value is NaN (no data).
func (v Vector) numbers() Vector {
	return slices.DeleteFunc(slices.Clone(v), func(s Series) bool { return math.IsNaN(s.Value) })
}

// answer is the envelope of every answer of Prometheus' HTTP API.
type answer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// ParseAnswer reads Prometheus' answer to an instant query, given the HTTP status of
// the answer: a vector or a scalar; an error for anything else, naming Prometheus'
// own error when it gives one. Series come out sorted by their labels.
func ParseAnswer(status int, body []byte) (Vector, error) {
	var a answer
	jsonErr := json.Unmarshal(body, &a)
	switch {
	case jsonErr == nil && a.Status == "error":
		return nil, fmt.Errorf("HTTP %d: %s: %s", status, shorten(a.ErrorType, 64), shorten(a.Error, 512))
	case status/100 != 2:
		return nil, fmt.Errorf("HTTP %d %s", status, http.StatusText(status))
	case jsonErr != nil:
		return nil, fmt.Errorf("not an answer of Prometheus' query API: %s", shorten(jsonErr.Error(), 200))
	case a.Status != "success":
		return nil, fmt.Errorf("answer status %q, not success", shorten(a.Status, 64))
	}
	var v Vector
	switch a.Data.ResultType {
	case "vector":
		var samples model.Vector
		if err := json.Unmarshal(a.Data.Result, &samples); err != nil {
			return nil, fmt.Errorf("read the vector: %s", shorten(err.Error(), 200))
		}
		for _, s := range samples {
			if s == nil || s.Histogram != nil {
				return nil, errors.New("the query returns native histograms, not numbers: use histogram_quantile or a function that makes numbers")
			}
			v = append(v, Series{Metric: s.Metric, Value: float64(s.Value)})
		}
	case "scalar":
		var s model.Scalar
		if err := json.Unmarshal(a.Data.Result, &s); err != nil {
			return nil, fmt.Errorf("read the scalar: %s", shorten(err.Error(), 200))
		}
		v = Vector{{Metric: model.Metric{}, Value: float64(s.Value)}}
	default:
		return nil, fmt.Errorf("the query returns a %q, not an instant vector or a scalar", shorten(a.Data.ResultType, 64))
	}
	sortSeries(v)
	return v, nil
}

// sortSeries sorts v by the series' names, each written once.
func sortSeries(v Vector) {
	type named struct {
		name string
		s    Series
	}
	list := make([]named, len(v))
	for i, s := range v {
		list[i] = named{s.String(), s}
	}
	slices.SortFunc(list, func(a, b named) int { return strings.Compare(a.name, b.name) })
	for i, n := range list {
		v[i] = n.s
	}
}

// shorten cuts s, text from outside, to at most n bytes of valid UTF-8 on one line.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

package main

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"testing"
)

// A session lives in the process that opened it: another process answers 401.
func TestSessionsLiveInOneProcess(t *testing.T) {
	a := httptest.NewServer(newHandler(config{Version: "1", Mode: modeOK}, "a"))
	defer a.Close()
	b := httptest.NewServer(newHandler(config{Version: "1", Mode: modeOK}, "b"))
	defer b.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	status := func(method, url string) int {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("GET", a.URL+"/cart"); got != http.StatusUnauthorized {
		t.Fatalf("cart before login: %d, want 401", got)
	}
	if got := status("POST", a.URL+"/login"); got != http.StatusOK {
		t.Fatalf("login: %d", got)
	}
	if got := status("GET", a.URL+"/cart"); got != http.StatusOK {
		t.Fatalf("cart in the session: %d, want 200", got)
	}
	// The same cookie at another process: the session is not there.
	u := a.URL + "/"
	req, _ := http.NewRequest("GET", b.URL+"/cart", nil)
	for _, ck := range jar.Cookies(mustURL(t, u)) {
		req.AddCookie(ck)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the session at another process: %d, want 401", resp.StatusCode)
	}
	if got := status("POST", a.URL+"/logout"); got != http.StatusOK {
		t.Fatalf("logout: %d", got)
	}
	if got := status("GET", a.URL+"/cart"); got != http.StatusUnauthorized {
		t.Fatalf("cart after logout: %d, want 401", got)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

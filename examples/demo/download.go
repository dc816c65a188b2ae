package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// A download streams downloadPiece bytes every downloadTick for as long as the client
// asked: a long response that holds its connection, as a file or a report does, which
// a restart cuts and a drained color lets finish.
const (
	downloadTick  = 100 * time.Millisecond
	downloadPiece = 8 << 10 // 80 KiB a second
	maxDownload   = 10 * time.Minute
)

// parseSeconds parses the seconds= of a download: a whole number from 1 to
// maxDownload's seconds.
func parseSeconds(s string) (time.Duration, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > int(maxDownload/time.Second) {
		return 0, fmt.Errorf("seconds=%.20q: want a whole number of seconds from 1 to %d", s, int(maxDownload.Seconds()))
	}
	return time.Duration(n) * time.Second, nil
}

// downloadSize is the length of a download that lasts d.
func downloadSize(d time.Duration) int64 { return int64(d/downloadTick) * downloadPiece }

// download serves GET /download?seconds=N: downloadSize bytes, announced in
// Content-Length, paced over N seconds. Like / it ignores the server's shutdown: a
// download in flight at SIGTERM goes on until --shutdown-timeout cuts it, and a client
// then holds fewer bytes than it was promised.
func download(w http.ResponseWriter, r *http.Request) {
	d, err := parseSeconds(r.URL.Query().Get("seconds"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(downloadSize(d), 10))
	piece := make([]byte, downloadPiece)
	rc := http.NewResponseController(w)
	t := time.NewTicker(downloadTick)
	defer t.Stop()
	for range d / downloadTick {
		if _, err := w.Write(piece); err != nil {
			return
		}
		_ = rc.Flush()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
}

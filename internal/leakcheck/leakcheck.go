// Package leakcheck finds what a test binary left running: its child processes.
package leakcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Children lists the live child processes of this one as "pid (command)", from
// /proc; none where /proc is missing. Zombies are not counted: they are reaped by
// whoever waits for them, or by the end of this process.
func Children() []string {
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != self || f[0] == "Z" {
			continue
		}
		kids = append(kids, strings.TrimSpace(string(b[:i+1])))
	}
	return kids
}

package room

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxMemInfo bounds how much of /proc/meminfo is read: it is about 1.5 KiB.
const maxMemInfo = 64 << 10

// MemInfo is what the kernel says of the host's memory, in bytes.
type MemInfo struct {
	Total     uint64 // MemTotal
	Available uint64 // MemAvailable: what can be allocated without swapping
}

// ReadMemInfo reads proc/meminfo under root ("/" on a host; a directory of test
// files in tests).
func ReadMemInfo(root string) (MemInfo, error) {
	file := filepath.Join(root, "proc", "meminfo")
	f, err := os.Open(file)
	if err != nil {
		return MemInfo{}, fmt.Errorf("read memory: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMemInfo+1))
	if err != nil {
		return MemInfo{}, fmt.Errorf("read %s: %w", file, err)
	}
	if len(b) > maxMemInfo {
		return MemInfo{}, fmt.Errorf("read %s: longer than %d bytes", file, maxMemInfo)
	}
	m, err := ParseMemInfo(string(b))
	if err != nil {
		return MemInfo{}, fmt.Errorf("%s: %w", file, err)
	}
	return m, nil
}

// ParseMemInfo parses the text of /proc/meminfo: lines "Name:   <n> kB". It needs
// MemTotal and MemAvailable (Linux 3.14 and later); other lines are skipped. An
// error names the line at fault.
func ParseMemInfo(text string) (MemInfo, error) {
	var m MemInfo
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for line := 1; sc.Scan(); line++ {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if name != "MemTotal" && name != "MemAvailable" {
			continue
		}
		if !ok {
			return MemInfo{}, fmt.Errorf("line %d: %q has no ':'", line, clip(sc.Text()))
		}
		if prev, dup := seen[name]; dup {
			return MemInfo{}, fmt.Errorf("line %d: %s again (first on line %d)", line, name, prev)
		}
		seen[name] = line
		v, err := parseKB(rest)
		if err != nil {
			return MemInfo{}, fmt.Errorf("line %d: %s: %v", line, name, err)
		}
		if name == "MemTotal" {
			m.Total = v
		} else {
			m.Available = v
		}
	}
	if err := sc.Err(); err != nil {
		return MemInfo{}, err
	}
	for _, name := range []string{"MemTotal", "MemAvailable"} {
		if _, ok := seen[name]; !ok {
			return MemInfo{}, fmt.Errorf("no %s line (MemAvailable needs Linux 3.14 or later)", name)
		}
	}
	if m.Available > m.Total {
		return MemInfo{}, fmt.Errorf("line %d: MemAvailable %d kB is more than MemTotal %d kB", seen["MemAvailable"], m.Available>>10, m.Total>>10)
	}
	return m, nil
}

// parseKB parses "   16303296 kB" into bytes.
func parseKB(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("%q is not \"<number> kB\"", clip(strings.TrimSpace(s)))
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || n > 1<<54 { // 2^64 bytes
		return 0, fmt.Errorf("%q is not a count of kB", clip(f[0]))
	}
	return n << 10, nil
}

// clip shortens outside text for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

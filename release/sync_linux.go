package release

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncTree makes everything written under dir durable. On Linux one syncfs(2) of the
// file system holding dir does it, where an fsync of each of up to MaxFiles entries
// would take minutes.
func syncTree(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

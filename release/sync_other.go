//go:build !linux

package release

import (
	"io/fs"
	"os"
	"path/filepath"
)

// syncTree makes everything written under dir durable: an fsync of each regular file
// and directory.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !(d.Type().IsRegular() || d.IsDir()) {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

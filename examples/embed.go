// Package examples holds the example fleet repository, embedded for the demo.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed fleet
var fleet embed.FS

// Fleet returns the example fleet repository.
func Fleet() fs.FS {
	sub, err := fs.Sub(fleet, "fleet")
	if err != nil {
		panic(err) // the directory is embedded above; this cannot fail
	}
	return sub
}

package rollback

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/baton-fleet/baton/internal/strictjson"
)

// readStateFile reads the record name in dir into v, by parseStateFile's rules; what
// names the record in errors. It reports false, and leaves v alone, when there is no
// such file.
func readStateFile(dir, name, what string, v any) (bool, error) {
	file := filepath.Join(dir, name)
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", what, err)
	}
	if err := parseStateFile(data, v); err != nil {
		return false, fmt.Errorf("read %s %s: %w", what, file, err)
	}
	return true, nil
}

// parseStateFile decodes data, the content of a state file, into v: exactly one JSON
// value, no field v does not know, nothing after it but white space.
//
// Unknown fields are refused on purpose. The state directory belongs to one host's
// agent, and the only reader that meets a field it does not know is an older baton
// after a downgrade. Ignoring the field would not keep it: the next write (a step of
// the transaction, a quarantine, a commit) would drop it, and a transaction recovered
// without a field that says what was done to the host could be recovered wrongly. So
// an older baton stops and names the file and the field, and the operator upgrades
// again or moves the file aside; a newer baton reads an older file whole, its missing
// fields at their zero values. A field is added to these records only when its zero
// value means what older files meant.
func parseStateFile(data []byte, v any) error {
	err := strictjson.Decode(data, v)
	if errors.Is(err, strictjson.ErrTrailing) {
		return errors.New("data after the record")
	}
	return err
}

// Package strictjson reads one JSON value strictly, the one way baton reads the JSON
// it did not just write itself: its state files, the local API's request bodies and
// the fleet's published head.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailing is the error of data that goes on after its JSON value.
var ErrTrailing = errors.New("data after the JSON value")

// Decode decodes data into v. data must hold exactly one JSON value (blanks around
// it aside), and no field that v does not have: a field nobody reads would be
// dropped unseen, and a second value would be ignored.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailing
	}
	return nil
}

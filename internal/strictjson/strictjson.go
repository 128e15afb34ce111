// Package strictjson checks that a JSON document is one value and
// nothing after it, which json.Decoder alone does not: Decode stops at the
// end of the first value, and More reports false before a stray ']' or
// '}', so "{...}]" passes a check with More.
package strictjson

import (
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailingData is End's error for anything but white space after the
// value.
var ErrTrailingData = errors.New("data after the JSON object")

// End returns nil when dec, having decoded a value, is at the end of its
// input (white space aside), ErrTrailingData when something else follows,
// and the reader's error when reading fails (a body over its limit).
func End(dec *json.Decoder) error {
	_, err := dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return ErrTrailingData
	}
	if _, ok := errors.AsType[*json.SyntaxError](err); ok {
		return ErrTrailingData
	}
	return err
}

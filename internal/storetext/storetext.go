// Package storetext keeps text from the bus storable in every database
// Troupe supports. SQLite stores any bytes as text; PostgreSQL refuses
// text that is not UTF-8 or holds a NUL, so the same message would be
// recorded on one and fail at every delivery on the other.
package storetext

import (
	"strings"
	"unicode/utf8"
)

// Keepable reports whether every supported database stores s as it is:
// UTF-8 without a NUL.
func Keepable(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// Storable is s as every supported database keeps it: U+FFFD for each run
// of bytes that is not UTF-8, and for each NUL. For free text (a reason,
// an operator's note, an id kept for display), not for keys: two keys
// could become one.
func Storable(s string) string {
	if Keepable(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

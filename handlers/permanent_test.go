package handlers_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/troupehq/troupe/handlers"
)

// sqlErr is a database error with an SQLSTATE, as pgx's *pgconn.PgError.
type sqlErr string

func (e sqlErr) Error() string    { return "sql error " + string(e) }
func (e sqlErr) SQLState() string { return string(e) }

// TestIsPermanent: a PermanentError, and a database's data exception
// (SQLSTATE class 22), wrapped or not, are permanent; other database
// errors (a serialization failure, a unique violation a retry may settle)
// and plain errors are not.
func TestIsPermanent(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{handlers.Permanent(errors.New("card number invalid")), true},
		{sqlErr("22021"), true},
		{fmt.Errorf("outbox: claim: %w", sqlErr("22001")), true},
		{sqlErr("40001"), false},
		{sqlErr("23505"), false},
		{errors.New("gateway timeout"), false},
		{nil, false},
	} {
		if got := handlers.IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/pgdb"
)

// FreshPostgres creates an empty database on the integration PostgreSQL
// for one test and returns its URL.
func FreshPostgres(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, _, err := pgdb.Create(ctx, base, "t")
	if err != nil {
		t.Fatal(err)
	}
	return dbURL
}

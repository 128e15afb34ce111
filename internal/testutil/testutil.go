package testutil

import (
	"os"
	"testing"
	"time"
)

// Environment variables that carry the real servers' URLs.
const (
	AMQPURLEnv     = "TROUPE_AMQP_URL"
	PostgresURLEnv = "TROUPE_POSTGRES_URL"
)

// AMQPURL returns the RabbitMQ URL of the integration servers; the test
// fails when it is not set.
func AMQPURL(t testing.TB) string {
	t.Helper()
	return requireEnv(t, AMQPURLEnv)
}

// PostgresURL returns the PostgreSQL URL of the integration servers; the
// test fails when it is not set.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return requireEnv(t, PostgresURLEnv)
}

func requireEnv(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: integration tests need the real servers; run them with `make test` "+
			"(or scripts/with-servers.sh go test -tags integration ./...)", name)
	}
	return v
}

// Eventually polls cond every few milliseconds until it returns nil or
// timeout passes, then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

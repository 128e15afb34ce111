package testutil

import "testing"

// SkipIntegration is called by each package's untagged placeholder test so
// that plain `go test ./...` says why that package's integration tests did
// not run.
func SkipIntegration(t *testing.T) {
	t.Skip("integration tests need real servers: build tag 'integration' and " +
		AMQPURLEnv + "/" + PostgresURLEnv + "; `make test` starts the servers and runs them")
}

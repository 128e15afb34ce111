// Package testutil holds the helpers shared by Troupe's tests: where the
// real servers of integration tests are, and polling with a deadline.
//
// # Integration tests
//
// Tests that need RabbitMQ or PostgreSQL carry the build tag integration
// and get their server's URL from [AMQPURL] or [PostgresURL]. Under the tag
// a missing URL fails the test: `make test` starts the servers
// (scripts/with-servers.sh) and exports TROUPE_AMQP_URL and
// TROUPE_POSTGRES_URL, so a server that did not come up is a failure, never
// a silent skip. Without the tag those tests are not compiled, and plain
// `go test ./...` needs no server.
package testutil

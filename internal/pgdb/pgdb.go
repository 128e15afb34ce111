// Package pgdb creates and drops throw-away PostgreSQL databases for the
// integration tests and the benchmark programs.
package pgdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// Create makes an empty database named prefix_<nanos> on the server of
// baseURL and returns its URL and a function that drops it (forcing off
// any connection still open). Safe for concurrent use.
func Create(ctx context.Context, baseURL, prefix string) (dbURL string, drop func(context.Context) error, err error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", nil, fmt.Errorf("pgdb: base URL: %w", err)
	}
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return "", nil, fmt.Errorf("pgdb: connect: %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("pgdb: create %s: %w", name, err)
	}
	u.Path = "/" + name
	drop = func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, baseURL)
		if err != nil {
			return fmt.Errorf("pgdb: drop %s: %w", name, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("pgdb: drop %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// Fresh is Create for programs: its cleanup drops the database within 30 s
// and reports a failure on stderr rather than returning it.
func Fresh(ctx context.Context, baseURL, prefix string) (dbURL string, cleanup func(), err error) {
	dbURL, drop, err := Create(ctx, baseURL, prefix)
	if err != nil {
		return "", nil, err
	}
	return dbURL, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}, nil
}

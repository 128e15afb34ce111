// Package pglazy is a database/sql driver for PostgreSQL that saves a
// transaction's round trips: pgx's own driver (stdlib), except that a
// transaction sends its BEGIN together with its first statement, and
// statements marked Deferred travel with its COMMIT.
//
// Across the network every statement waits for its answer. A handler's
// transaction of the outbox (BEGIN, inbox claim, its own writes, the
// outbox row, COMMIT) then costs a round trip per statement, and round
// trips were most of a service's CPU on RabbitMQ and PostgreSQL (the
// scheduler parking and waking goroutines, system calls on both sides).
// With this driver BEGIN rides with the first statement and the outbox
// row with the COMMIT: two round trips fewer per transaction, and the
// statements and their order are the same.
//
// Only transactions with default options are lazy; others (an isolation
// level, read-only) begin at once, as with pgx's driver.
package pglazy

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Deferred marks a statement, as a prefix of its text, that a lazy
// transaction runs with its COMMIT instead of at once: Exec returns a
// result without rows affected, and the statement's error, if any, fails
// the commit (which then rolls back). Outside a lazy transaction the
// statement runs at once. It is an SQL comment, so a statement marked
// reaches the server unchanged in meaning either way.
const Deferred = "/* troupe:deferred */ "

// NewConnector returns a connector for sql.OpenDB to the database at dsn
// (a postgres:// URL or a pgx connection string).
func NewConnector(dsn string) (driver.Connector, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return newConnector(cfg), nil
}

func newConnector(cfg *pgx.ConnConfig) driver.Connector {
	return connector{inner: stdlib.GetConnector(*cfg)}
}

type connector struct{ inner driver.Connector }

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := dc.(*stdlib.Conn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("pglazy: pgx's driver returned a %T", dc)
	}
	return &conn{Conn: sc}, nil
}

func (c connector) Driver() driver.Driver { return c.inner.Driver() }

// conn is pgx's connection with the lazy transaction it runs, if any.
// database/sql uses a connection from one goroutine at a time.
type conn struct {
	*stdlib.Conn
	tx *lazyTx
}

// lazyTx is a transaction whose BEGIN may not have been sent yet.
type lazyTx struct {
	c        *conn
	ctx      context.Context // BeginTx's, for the COMMIT, as pgx's driver does
	begun    bool            // BEGIN sent and done
	deferred []stmt
}

type stmt struct {
	query string
	args  []any
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.Isolation != driver.IsolationLevel(0) || opts.ReadOnly {
		return c.Conn.BeginTx(ctx, opts)
	}
	if c.Conn.Conn().IsClosed() {
		return nil, driver.ErrBadConn
	}
	c.tx = &lazyTx{c: c, ctx: ctx}
	return c.tx, nil
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// pendingBegin reports whether a lazy transaction has not sent its BEGIN.
func (c *conn) pendingBegin() bool { return c.tx != nil && !c.tx.begun }

// begin sends the pending BEGIN alone, before a statement that cannot
// carry it.
func (c *conn) begin(ctx context.Context) error {
	if !c.pendingBegin() {
		return nil
	}
	if _, err := c.Conn.Conn().Exec(ctx, "begin"); err != nil {
		return err
	}
	c.tx.begun = true
	return nil
}

func (c *conn) ExecContext(ctx context.Context, query string, argsV []driver.NamedValue) (driver.Result, error) {
	opts := hasOptions(argsV) // pgx reads them only outside a batch
	if rest, ok := strings.CutPrefix(query, Deferred); ok && c.tx != nil && !opts {
		c.tx.deferred = append(c.tx.deferred, stmt{rest, arguments(argsV)})
		return deferredResult{}, nil
	}
	if opts {
		if err := c.begin(ctx); err != nil {
			return nil, err
		}
	}
	if !c.pendingBegin() {
		return c.Conn.ExecContext(ctx, query, argsV)
	}
	pc := c.Conn.Conn()
	if pc.IsClosed() {
		return nil, driver.ErrBadConn
	}
	if len(argsV) == 0 {
		// pgx runs a statement without arguments in the simple protocol,
		// which takes several statements in one message (a SET LOCAL
		// list): BEGIN goes first in that message.
		tag, err := pc.Exec(ctx, "begin;\n"+query)
		// On an error whether BEGIN ran is unknown; ROLLBACK is harmless
		// if it did not.
		c.tx.begun = true
		if err != nil {
			return nil, err
		}
		return driver.RowsAffected(tag.RowsAffected()), nil
	}
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue(query, arguments(argsV)...)
	br := pc.SendBatch(ctx, b)
	_, berr := br.Exec()
	if berr == nil {
		c.tx.begun = true
	}
	tag, err := br.Exec()
	cerr := br.Close()
	if berr != nil {
		return nil, berr
	}
	if err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	return driver.RowsAffected(tag.RowsAffected()), nil
}

func (c *conn) QueryContext(ctx context.Context, query string, argsV []driver.NamedValue) (driver.Rows, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	return c.Conn.QueryContext(ctx, query, argsV)
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	return c.Conn.PrepareContext(ctx, query)
}

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// hasOptions reports whether the arguments start with one of pgx's
// options (a pgx.QueryExecMode, a pgx.QueryRewriter), which its Exec reads
// and its batches do not.
func hasOptions(argsV []driver.NamedValue) bool {
	if len(argsV) == 0 {
		return false
	}
	switch argsV[0].Value.(type) {
	case pgx.QueryExecMode, pgx.QueryRewriter:
		return true
	}
	return false
}

func arguments(argsV []driver.NamedValue) []any {
	args := make([]any, len(argsV))
	for i, v := range argsV {
		args[i] = v.Value
	}
	return args
}

// deferredResult is the result of a deferred statement, which has not run.
type deferredResult struct{}

var errDeferred = errors.New("pglazy: a deferred statement runs with the commit; its result is not known before")

func (deferredResult) LastInsertId() (int64, error) { return 0, errDeferred }
func (deferredResult) RowsAffected() (int64, error) { return 0, errDeferred }

// Commit sends what the transaction has not sent, its BEGIN if pending
// and its deferred statements, with the COMMIT, in one round trip.
func (tx *lazyTx) Commit() error {
	c := tx.c
	c.tx = nil
	if !tx.begun && len(tx.deferred) == 0 {
		return nil // nothing ran: nothing to commit
	}
	pc := c.Conn.Conn()
	if len(tx.deferred) == 0 {
		tag, err := pc.Exec(tx.ctx, "commit")
		return committed(tag, err)
	}
	b := &pgx.Batch{}
	if !tx.begun {
		b.Queue("begin")
	}
	for _, s := range tx.deferred {
		b.Queue(s.query, s.args...)
	}
	b.Queue("commit")
	br := pc.SendBatch(tx.ctx, b)
	var first error
	began := tx.begun
	if !tx.begun {
		if _, err := br.Exec(); err != nil {
			first = err
		} else {
			began = true
		}
	}
	for range tx.deferred {
		if _, err := br.Exec(); err != nil && first == nil {
			first = fmt.Errorf("a statement deferred to the commit: %w", err)
		}
	}
	if err := committed(br.Exec()); err != nil && first == nil {
		first = err
	}
	if err := br.Close(); err != nil && first == nil {
		first = err
	}
	if first != nil && began && pc.PgConn().TxStatus() != 'I' {
		// A failed statement made the server skip the rest of the batch,
		// the COMMIT included: the transaction is open and failed.
		if _, err := pc.Exec(context.WithoutCancel(tx.ctx), "rollback"); err != nil {
			first = errors.Join(first, err)
		}
	}
	return first
}

// committed is the outcome of a COMMIT: its error, or
// pgx.ErrTxCommitRollback when the server rolled back instead (a statement
// of the transaction had failed).
func committed(tag pgconn.CommandTag, err error) error {
	if err == nil && tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return err
}

// Rollback rolls back what was sent; a transaction that sent nothing has
// nothing to roll back.
func (tx *lazyTx) Rollback() error {
	c := tx.c
	c.tx = nil
	if !tx.begun {
		return nil
	}
	_, err := c.Conn.Conn().Exec(context.WithoutCancel(tx.ctx), "rollback")
	return err
}

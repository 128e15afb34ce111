package outbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
	_ "github.com/ncruces/go-sqlite3/driver" // database/sql driver "sqlite3"

	"github.com/troupehq/troupe/internal/pglazy"
	"github.com/troupehq/troupe/internal/storetext"
)

// Dialect is the SQL flavour of a DB.
type Dialect uint8

// Supported databases.
const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("Dialect(%d)", uint8(d))
}

// DB is a service's database: its own tables plus Troupe's (the inbox of
// handled messages; the outbox of events to publish). Safe for concurrent
// use.
type DB struct {
	db      *sql.DB
	dialect Dialect
	dsn     string
	changed notifier
	// group runs this process's SQLite transactions, one writer at a
	// time, committing those that queue meanwhile together (group.go).
	// Unused for PostgreSQL, which commits concurrent transactions itself.
	group group
	// stmts caches the prepared statements of Tx.Exec and Tx.QueryRow on
	// SQLite, whose driver would otherwise prepare every statement on every
	// call (a sixth of the shop's CPU under load). pgx caches by itself.
	stmts stmtCache
	// checkpoints copies the WAL into the database file off the commit
	// path (SQLite; checkpoint.go).
	checkpoints checkpointer
	// handoff, while a relay of this process runs on a SQLite DB, is
	// where commits hand their rows to it (handoff.go).
	handoff atomic.Pointer[handoff]
}

// stmtCache is a bounded cache of prepared statements by query. Safe for
// concurrent use.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// maxCachedStmts bounds the cache; queries beyond it are not cached
// (a service that builds its SQL dynamically gains nothing from it).
const maxCachedStmts = 256

// prepared returns the cached statement of query, preparing it the first
// time; nil when it is not to be cached.
func (c *stmtCache) prepared(ctx context.Context, db *sql.DB, query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil // the uncached call reports the error
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[query] = st
	return st
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// sqliteWriterWait bounds the wait for a turn in a SQLite group, like the
// busy timeout bounds the wait for the file's lock.
const sqliteWriterWait = 10 * time.Second

// Open opens a database by URL: "sqlite:PATH" (or a path ending in .db)
// for SQLite in WAL mode with a busy timeout, "postgres://..." for
// PostgreSQL. It migrates Troupe's schema before returning.
func Open(ctx context.Context, rawURL string) (*DB, error) {
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		dsn, conns, err := postgresPool(rawURL)
		if err != nil {
			return nil, err
		}
		// pglazy: pgx's driver, a transaction's BEGIN sent with its
		// first statement and its outbox rows with its COMMIT.
		connector, err := pglazy.NewConnector(dsn)
		if err != nil {
			return nil, fmt.Errorf("outbox: open %s: %w", Postgres, err)
		}
		db, err := open(ctx, Postgres, sql.OpenDB(connector), dsn)
		if err != nil {
			return nil, err
		}
		db.db.SetMaxOpenConns(conns) // lowers the idle connections kept to match
		return db, nil
	case strings.HasPrefix(rawURL, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(rawURL, "sqlite:"))
	case strings.HasSuffix(rawURL, ".db"):
		return openSQLite(ctx, rawURL)
	}
	return nil, fmt.Errorf("outbox: unsupported database URL %q: want sqlite:PATH or postgres://", rawURL)
}

// postgresPool reads the pool's size from a PostgreSQL URL's
// pool_max_conns parameter (named as pgx's own pool names it), and returns
// the URL without it. The default is pgx's: 4, or the number of CPUs when
// more. Unbounded, a service's handlers (32 at once per handler in the
// example shop) each held a connection, and on a 2-core machine shared
// with PostgreSQL the hundreds of busy backends cost more than they did:
// 62 checkouts/s across processes, 78 with 4 connections a service.
func postgresPool(rawURL string) (dsn string, conns int, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", 0, fmt.Errorf("outbox: database URL: %w", err)
	}
	q := u.Query()
	conns = max(4, runtime.NumCPU())
	if v := q.Get("pool_max_conns"); q.Has("pool_max_conns") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return "", 0, fmt.Errorf("outbox: database URL: pool_max_conns %q is not a positive integer", v)
		}
		conns = n
		q.Del("pool_max_conns")
		u.RawQuery = q.Encode()
	}
	return u.String(), conns, nil
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("outbox: sqlite URL without a path")
	}
	q := url.Values{}
	// busy_timeout first: the pragmas run in order on every new connection,
	// and switching a fresh file to WAL takes a lock that concurrent
	// openers (replicas migrating at once) must wait for, not fail on.
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Each member of a group commit runs under a savepoint, and SQLite
	// keeps the pages a savepoint may have to restore in a statement
	// journal: a temporary file unless temp_store is MEMORY. On disk that
	// was two writes per order's worth of pages (35 pwrite calls per
	// checkout in the example shop); in memory it costs a copy.
	q.Add("_pragma", "temp_store(MEMORY)")
	// The checkpointer (checkpoint.go) copies the WAL into the file off
	// the commit path; a commit that takes the WAL past this many pages
	// (32 MB) still does it itself, should the checkpointer fall behind.
	// SQLite's default of 1,000 pages had the shop's busiest files
	// checkpoint inside commits several times a second.
	q.Add("_pragma", "wal_autocheckpoint(8000)")
	q.Set("_txlock", "immediate") // writers queue at BEGIN, not at their first write
	// Times as modernc.org/sqlite, the driver before, wrote them, so that
	// files it wrote read back (and compare) alike.
	q.Set("_timefmt", sqliteTimeFormat)
	dsn := "file:" + uriPath(path) + "?" + q.Encode()
	sqldb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", SQLite, err)
	}
	db, err := open(ctx, SQLite, sqldb, dsn)
	if err != nil {
		return nil, err
	}
	db.startCheckpointer()
	return db, nil
}

// uriPath escapes the characters of path that a "file:" URI would read
// otherwise: '?' (the driver and SQLite split the parameters there), '#'
// and '%'. SQLite decodes them back.
func uriPath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// maxIdleConns is how many idle connections a DB keeps for reuse.
const maxIdleConns = 32

func open(ctx context.Context, d Dialect, sqldb *sql.DB, dsn string) (*DB, error) {
	// database/sql keeps 2 idle connections by default: a service with
	// more concurrent transactions (handlers, a relay claiming while it
	// settles) would open and close a connection for most of them.
	sqldb.SetMaxIdleConns(maxIdleConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{db: sqldb, dialect: d, dsn: dsn}
	if err := db.migrateRetryingBusy(ctx); err != nil {
		sqldb.Close()
		return nil, err
	}
	return db, nil
}

// migrateRetryingBusy migrates, retrying while SQLite reports the file
// busy. Several processes opening one new file at once race to switch it to
// WAL, and SQLite answers the losers SQLITE_BUSY at once, without its busy
// handler; once the file is in WAL mode (which persists) that cannot recur.
func (db *DB) migrateRetryingBusy(ctx context.Context) error {
	wait := 5 * time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.migrate(ctx)
		if err == nil || db.dialect != SQLite || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED.
func isBusy(err error) bool {
	return errors.Is(err, sqlite3.BUSY) || errors.Is(err, sqlite3.LOCKED)
}

// sqliteTimeFormat is how times are stored in SQLite (TIMESTAMP columns):
// text that sorts as the times do when they share a zone (the outbox's are
// UTC), since the fraction drops its trailing zeros and '+', '-' and '.'
// sort before the digits.
const sqliteTimeFormat = "2006-01-02 15:04:05.999999999-07:00"

// SQL returns the underlying *sql.DB for the service's own queries.
func (db *DB) SQL() *sql.DB { return db.db }

// QueryRow runs a read outside a transaction, written with ? placeholders.
// On SQLite the statement is prepared once and reused, like Tx.QueryRow's.
// Safe for concurrent use.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := db.cached(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.db.QueryRowContext(ctx, db.Rebind(query), args...)
}

// Query runs a read outside a transaction, prepared once like QueryRow's.
// Safe for concurrent use.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := db.cached(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return db.db.QueryContext(ctx, db.Rebind(query), args...)
}

// cached returns query's cached statement on SQLite; nil on PostgreSQL
// (pgx caches by itself) or when the cache is full.
func (db *DB) cached(ctx context.Context, query string) *sql.Stmt {
	if db.dialect != SQLite {
		return nil
	}
	return db.stmts.prepared(ctx, db.db, query)
}

// Dialect returns the database's SQL flavour.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close closes the database. On SQLite it waits for the group commit
// running, if any; InTx calls after it fail. Safe to call while other
// goroutines call InTx (not from inside InTx's function, where it would
// wait for itself).
func (db *DB) Close() error {
	db.checkpoints.close()
	// In this order: the group running, if any, ends before the
	// statements it may be using close.
	return errors.Join(db.group.close(), db.stmts.close(), db.db.Close())
}

// Rebind turns a query written with ? placeholders into the dialect's
// ($1, $2, ... for PostgreSQL).
func (db *DB) Rebind(query string) string {
	if db.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Tx is a transaction on a DB: the service's writes, the inbox row of the
// message being handled and (with the outbox) the events to publish commit
// together.
//
// On SQLite the transaction is a group's (see InTx), and its Exec, Query
// and QueryRow do not interrupt a running statement when ctx ends: SQLite
// would roll the whole transaction back, the other members' writes with
// it. They check ctx before each statement instead, and a member whose
// context ended fails alone. The methods of the embedded *sql.Tx
// (ExecContext...) take no such care.
type Tx struct {
	*sql.Tx
	db    *DB
	added int // outbox rows written for the claims
	// handed are the outbox rows written leased to handoff, to hand it
	// once the transaction commits.
	handed      []row
	handoff     *handoff
	afterCommit []func()
	// bound holds the group's cached statements bound to its transaction
	// (SQLite), shared by the members, which run one after another: each
	// is bound once per group, not once per call.
	bound map[string]*sql.Stmt
}

// AfterCommit registers f to run once tx has committed (in InTx's
// goroutine, after the commit returned); f does not run when tx rolls back.
// Use it to signal other goroutines that must see the transaction's writes.
// Not safe for concurrent use, like the transaction itself.
func (tx *Tx) AfterCommit(f func()) { tx.afterCommit = append(tx.afterCommit, f) }

// Exec runs a statement written with ? placeholders. On SQLite the
// statement is prepared once per connection and reused.
func (tx *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, ctx := tx.stmt(ctx, query)
	if st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, tx.db.Rebind(query), args...)
}

// QueryRow runs a query written with ? placeholders, prepared once like
// Exec's.
func (tx *Tx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, ctx := tx.stmt(ctx, query)
	if st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, tx.db.Rebind(query), args...)
}

// Query runs a query written with ? placeholders, prepared once like
// Exec's.
func (tx *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, ctx := tx.stmt(ctx, query)
	if st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, tx.db.Rebind(query), args...)
}

// stmt returns query's cached statement bound to tx, and the context to
// run it with; nil when not cached (PostgreSQL, or the cache is full).
// The bound statement closes with tx. On SQLite the context no longer
// interrupts the statement once it runs (see Tx), unless it already ended:
// then database/sql fails the call before the statement starts.
func (tx *Tx) stmt(ctx context.Context, query string) (*sql.Stmt, context.Context) {
	if tx.db.dialect != SQLite {
		return nil, ctx
	}
	if ctx.Err() == nil {
		ctx = context.WithoutCancel(ctx)
	}
	if st, ok := tx.bound[query]; ok {
		return st, ctx
	}
	st := tx.db.cached(ctx, query)
	if st == nil {
		return nil, ctx
	}
	st = tx.StmtContext(ctx, st)
	if tx.bound != nil {
		tx.bound[query] = st
	}
	return st, ctx
}

// InTx runs f in a transaction, committed when f returns nil and rolled
// back otherwise; f must not commit or roll back tx itself. On SQLite the
// transactions of one DB run one at a time, and those that wait meanwhile
// commit together (a group commit): f then runs under a savepoint of a
// transaction it shares, which its error or panic rolls back alone, and
// InTx returns once the shared transaction committed (a transaction begun
// inside f waits for f's, and fails after 10 s). f may run on the goroutine
// of another caller of the group: it must not call runtime.Goexit (nor
// testing's t.FailNow), which would end that goroutine. Safe for
// concurrent use.
func (db *DB) InTx(ctx context.Context, f func(tx *Tx) error) error {
	if db.dialect == SQLite {
		return db.inGroup(ctx, f)
	}
	sqltx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
	}
	tx := &Tx{Tx: sqltx, db: db}
	if err := f(tx); err != nil {
		return errors.Join(err, ignoreDone(sqltx.Rollback()))
	}
	if err := sqltx.Commit(); err != nil {
		return fmt.Errorf("outbox: commit: %w", err)
	}
	if tx.added > 0 {
		db.changed.notify()
	}
	for _, f := range tx.afterCommit {
		f()
	}
	return nil
}

// errTxOwned is what Commit and Rollback of a Tx return: InTx ends it.
var errTxOwned = errors.New("outbox: the transaction is committed or rolled back by InTx, after its function returns")

// Commit refuses: InTx commits the transaction when its function returns
// nil.
func (tx *Tx) Commit() error { return errTxOwned }

// Rollback refuses: InTx rolls the transaction back when its function
// returns an error.
func (tx *Tx) Rollback() error { return errTxOwned }

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// Claim records in the inbox that consumer handles the message with key,
// in tx. It returns false when the key was already recorded (by a committed
// transaction): the message is a duplicate and its effects must not be
// applied again. Concurrent claims of one key wait for each other. Any
// bytes make a key, on every dialect (see storedKey).
func (tx *Tx) Claim(ctx context.Context, consumer, key string) (bool, error) {
	res, err := tx.Exec(ctx,
		`INSERT INTO troupe_inbox (consumer, key, handled_at) VALUES (?, ?, ?) ON CONFLICT (consumer, key) DO NOTHING`,
		consumer, storedKey(key), time.Now().UTC())
	if err != nil {
		return false, fmt.Errorf("outbox: claim %s/%s: %w", consumer, key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// Seen reports whether consumer handled key (the inbox outside a
// transaction; handlers.IdempotencyStore).
func (db *DB) Seen(ctx context.Context, consumer, key string) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM troupe_inbox WHERE consumer = ? AND key = ?`, consumer, storedKey(key)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("outbox: inbox lookup: %w", err)
	}
	return true, nil
}

// Record records that consumer handled key (handlers.IdempotencyStore).
func (db *DB) Record(ctx context.Context, consumer, key string) error {
	return db.InTx(ctx, func(tx *Tx) error {
		_, err := tx.Claim(ctx, consumer, key)
		return err
	})
}

// Inbox keys and ordering keys come from messages (a message id, a saga
// id, a business key a producer set), so any bytes. PostgreSQL refuses
// text that is not UTF-8 or holds a NUL, and index entries over about
// 2.7 kB, where SQLite takes them all: the same message would be handled
// on one and fail at every delivery on the other. storedKey stores such a
// key as hashedKey and the SHA-256 of its bytes in hex, one key to one
// stored form (a key that starts with hashedKey itself is hashed too, so
// that no key is stored as another's hash), and every other key as it is.
const (
	maxStoredKey = 255
	hashedKey    = "~sha256:"
)

func storedKey(key string) string {
	if len(key) <= maxStoredKey && storetext.Keepable(key) && !strings.HasPrefix(key, hashedKey) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hashedKey + hex.EncodeToString(sum[:])
}

// pruneChunk is how many inbox rows one transaction of PruneInbox deletes.
const pruneChunk = 1000

// PruneInbox deletes the inbox rows of the messages handled before before,
// oldest first, pruneChunk rows per transaction so that other writers are
// not held up, and returns how many it deleted. A message redelivered after
// its row is gone is handled again: the inbox deduplicates within its
// retention only (handlers.Config.InboxRetention). Safe for concurrent use.
func (db *DB) PruneInbox(ctx context.Context, before time.Time) (int64, error) {
	row := "rowid"
	if db.dialect == Postgres {
		row = "ctid"
	}
	q := `DELETE FROM troupe_inbox WHERE ` + row + ` IN (
		SELECT ` + row + ` FROM troupe_inbox WHERE handled_at < ? ORDER BY handled_at LIMIT ?)`
	var total int64
	for {
		var n int64
		err := db.InTx(ctx, func(tx *Tx) error {
			res, err := tx.Exec(ctx, q, before.UTC(), pruneChunk)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("outbox: prune inbox: %w", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

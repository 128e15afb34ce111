package twopc

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/troupehq/troupe/internal/storetext"
	"github.com/troupehq/troupe/outbox"
)

// Branch states at a participant.
const (
	statePrepared = "prepared"
	// stateCommitted and stateAborted are shared with the coordinator.
)

// ErrConflict is a decision that contradicts the branch's durable state
// (COMMIT of an aborted branch, ABORT of a committed one). The protocol
// never sends one; a participant logs it, does not acknowledge it, and
// rejects it (Deliver's error wraps ErrRejected too).
var ErrConflict = errors.New("twopc: decision conflicts with the branch's state")

// Resource is what a participant prepares, commits and aborts: the typed
// API of a branch whose payload is P. Each method runs inside the
// transaction (tx) that records the branch's new state, so the resource's
// writes and the protocol state commit together.
//
// Prepare holds the resource (e.g. authorises a payment, holds stock) and
// votes: YES promises that Commit will succeed later; NO (or an error)
// aborts the branch unilaterally, and everything Prepare wrote in tx is
// rolled back. Commit makes the held resource permanent; Abort releases
// it. Each is called at most once per branch. Implementations must be safe
// for concurrent use by different branches.
type Resource[P any] interface {
	Prepare(ctx context.Context, tx *outbox.Tx, gid string, p P) (Vote, error)
	Commit(ctx context.Context, tx *outbox.Tx, gid string, p P) error
	Abort(ctx context.Context, tx *outbox.Tx, gid string, p P) error
}

// Participant runs the participant side of the protocol for a Resource:
// PREPARE durably records the prepared state together with the resource's
// hold, then votes; COMMIT and ABORT are idempotent and acknowledged; a
// branch left prepared asks its coordinator for the outcome (at Recover,
// then every resend interval) and never decides alone. An ABORT for a
// branch it never saw leaves a record, so that a PREPARE arriving later is
// answered NO without holding anything.
//
// A Participant is safe for concurrent use; its state is in its database
// only, so a crash loses nothing.
type Participant[P any] struct {
	name string
	db   *outbox.DB
	res  Resource[P]
	send Sender
	o    options

	mu      sync.Mutex
	queried map[string]time.Time // gid -> last outcome query
}

// NewParticipant returns the participant called name (its address on the
// bus) for res, keeping its branches in db and answering with send. It
// migrates the tables of package twopc.
func NewParticipant[P any](ctx context.Context, name string, db *outbox.DB, res Resource[P], send Sender, opts ...Option) (*Participant[P], error) {
	if name == "" || db == nil || res == nil || send == nil {
		return nil, errors.New("twopc: participant needs a name, a database, a resource and a sender")
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	return &Participant[P]{name: name, db: db, res: res, send: send, o: newOptions(opts), queried: map[string]time.Time{}}, nil
}

// Name returns the participant's address.
func (p *Participant[P]) Name() string { return p.name }

// Deliver handles PREPARE and the decision. It rejects (an error wrapping
// ErrRejected, with the reason) a message Validate refuses, one addressed
// to another node, a vote, acknowledgement or query, a PREPARE or decision
// about a branch from a node other than the coordinator that prepared (or
// aborted) it, COMMIT of a branch never prepared, and a decision that
// contradicts the branch's state (ErrConflict); nothing is recorded or sent
// for it. Any other error means the message should be delivered again
// (nothing was decided by it that a redelivery would repeat). Safe for
// concurrent use.
func (p *Participant[P]) Deliver(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return rejected(err)
	}
	if m.To != p.name {
		return rejected(fmt.Errorf("%s %s is addressed to %q, not to participant %q", m.Kind, m.GID, m.To, p.name))
	}
	switch m.Kind {
	case KindPrepare:
		return p.prepare(ctx, m)
	case KindDecision:
		return p.apply(ctx, m)
	}
	return rejected(fmt.Errorf("%s %s from %q: a participant takes PREPARE and decisions", m.Kind, m.GID, m.From))
}

// errNotCoordinator is a PREPARE or decision about a branch from a node
// other than the branch's coordinator.
func errNotCoordinator(m Message, coordinator string) error {
	return rejected(fmt.Errorf("%s %s from %q: the branch's coordinator is %q", m.Kind, m.GID, m.From, coordinator))
}

// errVoteNo rolls back what a resource wrote while voting NO.
var errVoteNo = errors.New("twopc: vote no")

func (p *Participant[P]) prepare(ctx context.Context, m Message) (err error) {
	ctx, span := tracer().Start(contextOf(ctx, m.Trace), "twopc prepare "+p.name)
	span.SetAttributes(attribute.String(attrGID, m.GID), attribute.String(attrParticipant, p.name))
	defer func() { endSpan(span, err) }()
	payload := string(m.Payload)
	if payload == "" {
		payload = "null"
	}
	now := p.o.clock.Now().UnixNano()
	vote, reason := Yes, ""
	err = p.db.InTx(ctx, func(tx *outbox.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO troupe_twopc_participant
			(participant, gid, coordinator, state, payload, trace, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (participant, gid) DO NOTHING`,
			p.name, m.GID, m.From, statePrepared, payload, encodeTrace(m.Trace), now, now)
		if err != nil {
			return fmt.Errorf("twopc: record prepare %s: %w", m.GID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			// A duplicate PREPARE, or one after the decision: answer with
			// what is recorded.
			if err != nil {
				return err
			}
			b, err := p.state(ctx, tx, m.GID)
			if err != nil {
				return err
			}
			if b.coordinator != m.From {
				return errNotCoordinator(m, b.coordinator)
			}
			state, r := b.state, b.reason
			vote, reason = Yes, r
			if state == stateAborted {
				vote = No
			}
			return nil
		}
		var v P
		if err := json.Unmarshal([]byte(payload), &v); err != nil {
			vote, reason = No, storetext.Storable("bad payload: "+err.Error())
			return errVoteNo
		}
		vote, err = p.res.Prepare(ctx, tx, m.GID, v)
		switch {
		case err != nil:
			vote, reason = No, storetext.Storable(err.Error())
			return errVoteNo
		case vote != Yes:
			vote, reason = No, "resource voted no"
			return errVoteNo
		}
		return p.o.hook(ctx, StepPreparing, m.GID)
	})
	if errors.Is(err, errVoteNo) {
		vote, reason, err = p.recordNo(ctx, m, payload, reason)
	}
	if err != nil {
		return err
	}
	if err := p.o.hook(ctx, StepVoting, m.GID); err != nil {
		return err
	}
	span.SetAttributes(attribute.String("twopc.vote", vote.String()))
	if err := p.send.Send(ctx, Message{Kind: KindVote, GID: m.GID, From: p.name, To: m.From, Vote: vote, Reason: reason, Trace: m.Trace}); err != nil {
		return fmt.Errorf("twopc: send vote %s: %w", m.GID, err)
	}
	return p.o.hook(ctx, StepVoted, m.GID)
}

// recordNo records a branch aborted by its own NO vote. A concurrent
// duplicate PREPARE may have recorded the branch first: its state wins.
func (p *Participant[P]) recordNo(ctx context.Context, m Message, payload, reason string) (Vote, string, error) {
	vote := No
	now := p.o.clock.Now().UnixNano()
	err := p.db.InTx(ctx, func(tx *outbox.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO troupe_twopc_participant
			(participant, gid, coordinator, state, payload, reason, trace, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (participant, gid) DO NOTHING`,
			p.name, m.GID, m.From, stateAborted, payload, reason, encodeTrace(m.Trace), now, now)
		if err != nil {
			return fmt.Errorf("twopc: record no %s: %w", m.GID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		b, err := p.state(ctx, tx, m.GID)
		if err != nil {
			return err
		}
		if b.coordinator != m.From {
			return errNotCoordinator(m, b.coordinator)
		}
		if b.state != stateAborted {
			vote = Yes
		}
		reason = b.reason
		return nil
	})
	return vote, reason, err
}

// branchRow is a branch's recorded state, its coordinator, the reason of
// an abort, and the payload PREPARE carried.
type branchRow struct {
	state, coordinator, reason, payload string
}

// state reads a branch's row in tx, locking it on PostgreSQL (SQLite
// transactions here are serialized at BEGIN).
func (p *Participant[P]) state(ctx context.Context, tx *outbox.Tx, gid string) (branchRow, error) {
	q := `SELECT state, coordinator, reason, payload FROM troupe_twopc_participant WHERE participant = ? AND gid = ?`
	if p.db.Dialect() == outbox.Postgres {
		q += ` FOR UPDATE`
	}
	var b branchRow
	if err := tx.QueryRow(ctx, q, p.name, gid).Scan(&b.state, &b.coordinator, &b.reason, &b.payload); err != nil {
		return branchRow{}, fmt.Errorf("twopc: branch %s: %w", gid, err)
	}
	return b, nil
}

// apply applies a decision once and acknowledges it every time.
func (p *Participant[P]) apply(ctx context.Context, m Message) (err error) {
	ctx, span := tracer().Start(contextOf(ctx, m.Trace), "twopc "+m.Outcome.String()+" "+p.name)
	span.SetAttributes(attribute.String(attrGID, m.GID), attribute.String(attrParticipant, p.name))
	defer func() { endSpan(span, err) }()
	err = p.db.InTx(ctx, func(tx *outbox.Tx) error {
		b, err := p.state(ctx, tx, m.GID)
		if errors.Is(err, sql.ErrNoRows) {
			if m.Outcome == Commit {
				return rejected(fmt.Errorf("commit %s from %q: the branch was never prepared", m.GID, m.From))
			}
			// ABORT before PREPARE (PREPARE lost or late): remember it, so
			// a late PREPARE is answered NO.
			now := p.o.clock.Now().UnixNano()
			_, err = tx.Exec(ctx, `INSERT INTO troupe_twopc_participant
				(participant, gid, coordinator, state, payload, reason, created_at, updated_at)
				VALUES (?, ?, ?, ?, 'null', 'aborted before prepare', ?, ?)`, p.name, m.GID, m.From, stateAborted, now, now)
			return err
		}
		if err != nil {
			return err
		}
		if b.coordinator != m.From {
			return errNotCoordinator(m, b.coordinator)
		}
		want := stateCommitted
		if m.Outcome == Abort {
			want = stateAborted
		}
		switch b.state {
		case want:
			return nil // a duplicate decision
		case statePrepared:
		default:
			return rejected(fmt.Errorf("%w: %s is %s, told %s", ErrConflict, m.GID, b.state, m.Outcome))
		}
		var v P
		if err := json.Unmarshal([]byte(b.payload), &v); err != nil {
			return fmt.Errorf("twopc: payload of %s: %w", m.GID, err)
		}
		if m.Outcome == Commit {
			err = p.res.Commit(ctx, tx, m.GID, v)
		} else {
			err = p.res.Abort(ctx, tx, m.GID, v)
		}
		if err != nil {
			return fmt.Errorf("twopc: %s %s: %w", m.Outcome, m.GID, err)
		}
		_, err = tx.Exec(ctx, `UPDATE troupe_twopc_participant SET state = ?, updated_at = ? WHERE participant = ? AND gid = ?`,
			want, p.o.clock.Now().UnixNano(), p.name, m.GID)
		return err
	})
	switch {
	case errors.Is(err, ErrConflict):
		// A decision that contradicts the branch: never applied, never
		// acknowledged, and worth more than the bus's warning.
		p.o.logger.LogAttrs(ctx, slog.LevelError, "twopc: refused decision", slog.String(logNode, p.name),
			slog.String(logGID, m.GID), slog.Any("error", err))
		return err
	case err != nil:
		return err
	}
	p.mu.Lock()
	delete(p.queried, m.GID)
	p.mu.Unlock()
	if err := p.o.hook(ctx, StepApplied, m.GID); err != nil {
		return err
	}
	if err := p.send.Send(ctx, Message{Kind: KindAck, GID: m.GID, From: p.name, To: m.From, Trace: m.Trace}); err != nil {
		return fmt.Errorf("twopc: send ack %s: %w", m.GID, err)
	}
	return nil
}

// Recover asks the coordinator for the outcome of every branch left
// prepared. Call it once at start-up; Run does.
func (p *Participant[P]) Recover(ctx context.Context) error {
	return p.query(ctx, time.Time{})
}

// Tick asks again about the branches prepared longer than the resend
// interval whose outcome is still unknown. Safe for concurrent use.
func (p *Participant[P]) Tick(ctx context.Context) error {
	return p.query(ctx, p.o.clock.Now().Add(-p.o.resendInterval))
}

// query asks about the prepared branches last touched (or asked about)
// before cutoff; all of them with a zero cutoff.
func (p *Participant[P]) query(ctx context.Context, cutoff time.Time) error {
	branches, err := p.prepared(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	for gid := range p.queried {
		if _, ok := branches[gid]; !ok {
			delete(p.queried, gid)
		}
	}
	var due []Message
	for gid, b := range branches {
		last := b.updated
		if q := p.queried[gid]; q.After(last) {
			last = q
		}
		if cutoff.IsZero() || !last.After(cutoff) {
			p.queried[gid] = p.o.clock.Now()
			due = append(due, Message{Kind: KindQuery, GID: gid, From: p.name, To: b.coordinator, Trace: b.trace})
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, m := range due {
		if err := p.send.Send(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("twopc: query %s: %w", m.GID, err))
		}
	}
	return errors.Join(errs...)
}

type preparedBranch struct {
	coordinator string
	updated     time.Time
	trace       map[string]string
}

func (p *Participant[P]) prepared(ctx context.Context) (map[string]preparedBranch, error) {
	rows, err := p.db.Query(ctx, `SELECT gid, coordinator, updated_at, trace FROM troupe_twopc_participant
		WHERE participant = ? AND state = ?`, p.name, statePrepared)
	if err != nil {
		return nil, fmt.Errorf("twopc: prepared branches: %w", err)
	}
	defer rows.Close()
	out := map[string]preparedBranch{}
	for rows.Next() {
		var gid, trace string
		var b preparedBranch
		var updated int64
		if err := rows.Scan(&gid, &b.coordinator, &updated, &trace); err != nil {
			return nil, fmt.Errorf("twopc: prepared branches: %w", err)
		}
		b.updated, b.trace = time.Unix(0, updated), decodeTrace(trace)
		out[gid] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("twopc: prepared branches: %w", err)
	}
	return out, nil
}

// BranchState returns the state of branch gid at this participant:
// "prepared", "committed" or "aborted"; "" when it has no record.
func (p *Participant[P]) BranchState(ctx context.Context, gid string) (string, error) {
	var state string
	err := p.db.QueryRow(ctx, `SELECT state FROM troupe_twopc_participant WHERE participant = ? AND gid = ?`,
		p.name, gid).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("twopc: branch %s: %w", gid, err)
	}
	return state, nil
}

// Run asks about the branches left prepared, then again every tick
// interval, until ctx ends; it returns ctx's error.
func (p *Participant[P]) Run(ctx context.Context) error {
	if err := p.Recover(ctx); err != nil {
		p.o.logger.LogAttrs(ctx, slog.LevelWarn, "twopc: recover", slog.String(logNode, p.name), slog.Any("error", err))
	}
	return tickUntilDone(ctx, p.o, p.name, p.Tick)
}

package twopc

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/troupehq/troupe/outbox"
)

// Errors of the coordinator; match with errors.Is.
var (
	// ErrExists: Begin with a global id that is already logged.
	ErrExists = errors.New("twopc: transaction already exists")
	// ErrUnknown: a global id the coordinator has no record of.
	ErrUnknown = errors.New("twopc: unknown transaction")
)

// Transaction states in the coordinator's log.
const (
	statePreparing = "preparing"
	stateCommitted = "committed"
	stateAborted   = "aborted"
)

// Branch is one participant's part of a transaction: who, and what it must
// prepare (its payload, JSON).
type Branch struct {
	Participant string
	Payload     json.RawMessage
}

// NewBranch encodes payload as JSON into a branch for participant.
func NewBranch(participant string, payload any) (Branch, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return Branch{}, fmt.Errorf("twopc: encode payload of %s: %w", participant, err)
	}
	return Branch{Participant: participant, Payload: b}, nil
}

// Coordinator runs the two-phase commit protocol's coordinator side:
// Begin logs a transaction and sends PREPARE to its participants, the votes
// arriving through Deliver decide it (COMMIT when every participant voted
// YES, ABORT otherwise or when the vote deadline passes), the decision is
// logged before anyone is told, and it is re-sent until every participant
// acknowledged it. Recover picks up the log after a restart: a transaction
// with no logged decision is aborted (presumed abort), a decided one that is
// not finished is re-sent.
//
// A Coordinator is safe for concurrent use. Its in-memory state is a cache
// of its log: dropping it (a crash) loses nothing that Recover cannot
// rebuild.
type Coordinator struct {
	name string
	db   *outbox.DB
	send Sender
	o    options

	mu  sync.Mutex
	txs map[string]*txn // transactions not finished

	// adoptWaits, when set (by tests), is called when Recover starts
	// waiting for a Begin of the same gid.
	adoptWaits func(gid string)
}

// txn is a transaction in memory. Lock order: Coordinator.mu, then txn.mu
// (never the other way round; Coordinator.mu is never held across I/O).
type txn struct {
	mu       sync.Mutex
	gid      string
	branches []Branch
	votes    map[string]Vote
	acked    map[string]bool
	deadline time.Time
	nextSend time.Time
	outcome  Outcome // zero while the votes are collected
	noReason string  // why a participant voted NO
	trace    map[string]string
	decided  chan struct{}
	finished bool
	// begun is set (under Coordinator.mu) while Begin logs the
	// transaction, and closed once that resolved: then Begin has cleared
	// it (logged) or forgotten the transaction (not logged: the gid was in
	// the log already).
	begun chan struct{}
}

func (t *txn) has(participant string) bool {
	return slices.ContainsFunc(t.branches, func(b Branch) bool { return b.Participant == participant })
}

// NewCoordinator returns the coordinator called name (its address on the
// bus) logging in db and sending with send. It migrates the tables of
// package twopc. Call Recover (or Run, which does) before delivering
// messages to it.
func NewCoordinator(ctx context.Context, name string, db *outbox.DB, send Sender, opts ...Option) (*Coordinator, error) {
	if name == "" || db == nil || send == nil {
		return nil, errors.New("twopc: coordinator needs a name, a database and a sender")
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	return &Coordinator{name: name, db: db, send: send, o: newOptions(opts), txs: map[string]*txn{}}, nil
}

// Name returns the coordinator's address.
func (c *Coordinator) Name() string { return c.name }

// Begin logs transaction gid with its branches and sends PREPARE to each
// participant. It returns once the transaction is durable and PREPARE was
// handed to the sender; Wait returns its outcome. A gid already logged is
// ErrExists. Safe for concurrent use.
func (c *Coordinator) Begin(ctx context.Context, gid string, branches []Branch) error {
	if err := validateBegin(gid, branches); err != nil {
		return err
	}
	ctx, span := tracer().Start(ctx, "twopc begin")
	span.SetAttributes(attribute.String(attrGID, gid), attribute.Int("twopc.participants", len(branches)))
	err := c.begin(ctx, gid, branches)
	endSpan(span, err)
	return err
}

func validateBegin(gid string, branches []Branch) error {
	var errs []error
	if gid == "" {
		errs = append(errs, errors.New("twopc: transaction without a gid"))
	}
	if len(branches) == 0 {
		errs = append(errs, fmt.Errorf("twopc: transaction %q without participants", gid))
	}
	seen := map[string]bool{}
	for _, b := range branches {
		switch {
		case b.Participant == "":
			errs = append(errs, fmt.Errorf("twopc: transaction %q: branch without a participant", gid))
		case seen[b.Participant]:
			errs = append(errs, fmt.Errorf("twopc: transaction %q: participant %q twice", gid, b.Participant))
		case len(b.Payload) > 0 && !json.Valid(b.Payload):
			errs = append(errs, fmt.Errorf("twopc: transaction %q: payload of %q is not JSON", gid, b.Participant))
		}
		seen[b.Participant] = true
	}
	return errors.Join(errs...)
}

func (c *Coordinator) begin(ctx context.Context, gid string, branches []Branch) error {
	now := c.o.clock.Now()
	begun := make(chan struct{})
	t := &txn{
		gid: gid, branches: slices.Clone(branches),
		votes: map[string]Vote{}, acked: map[string]bool{},
		deadline: now.Add(c.o.voteTimeout), nextSend: now.Add(c.o.resendInterval),
		trace: carrierOf(ctx), decided: make(chan struct{}), begun: begun,
	}
	// Known before it is logged: a Recover running meanwhile (Run starts
	// with one) must not take the logged, undecided transaction for one a
	// crash left behind, and abort it.
	c.mu.Lock()
	if _, ok := c.txs[gid]; ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrExists, gid)
	}
	c.txs[gid] = t
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		if c.txs[gid] == t {
			delete(c.txs, gid)
		}
		c.mu.Unlock()
	}
	logged := func(ok bool) { // Begin's log resolved: see txn.begun
		if !ok {
			forget()
		}
		c.mu.Lock()
		t.begun = nil
		c.mu.Unlock()
		close(begun)
	}
	err := c.db.InTx(ctx, func(tx *outbox.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO troupe_twopc_tx (gid, coordinator, state, trace, created_at, deadline)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gid) DO NOTHING`,
			gid, c.name, statePreparing, encodeTrace(t.trace), now.UnixNano(), t.deadline.UnixNano())
		if err != nil {
			return fmt.Errorf("twopc: log begin %s: %w", gid, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("%w: %s", ErrExists, gid), err)
		}
		for i, b := range t.branches {
			payload := string(b.Payload)
			if payload == "" {
				payload = "null"
			}
			if _, err := tx.Exec(ctx, `INSERT INTO troupe_twopc_branch (gid, participant, position, payload) VALUES (?, ?, ?, ?)`,
				gid, b.Participant, i, payload); err != nil {
				return fmt.Errorf("twopc: log branch %s/%s: %w", gid, b.Participant, err)
			}
		}
		return nil
	})
	logged(err == nil)
	if err != nil {
		return err
	}
	if err := c.o.hook(ctx, StepBegun, gid); err != nil {
		forget()
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.branches {
		c.sendPrepare(ctx, t, b)
	}
	return nil
}

func (c *Coordinator) sendPrepare(ctx context.Context, t *txn, b Branch) {
	c.sendLogged(ctx, Message{Kind: KindPrepare, GID: t.gid, From: c.name, To: b.Participant, Payload: b.Payload, Trace: t.trace})
}

func (c *Coordinator) sendDecision(ctx context.Context, gid, to string, o Outcome, trace map[string]string) {
	c.sendLogged(ctx, Message{Kind: KindDecision, GID: gid, From: c.name, To: to, Outcome: o, Trace: trace})
}

// sendLogged sends m; a lost message is re-sent later, so a send error is
// logged, not returned.
func (c *Coordinator) sendLogged(ctx context.Context, m Message) {
	if err := c.send.Send(ctx, m); err != nil {
		c.o.logger.LogAttrs(ctx, slog.LevelWarn, "twopc: send", slog.String(logNode, c.name),
			slog.String(logGID, m.GID), slog.String(logParticipant, m.To), slog.String("kind", m.Kind.String()), slog.Any("error", err))
	}
}

// Wait blocks until transaction gid is decided or ctx ends, and returns
// the outcome. ErrUnknown for a gid that was never logged.
func (c *Coordinator) Wait(ctx context.Context, gid string) (Outcome, error) {
	c.mu.Lock()
	t := c.txs[gid]
	c.mu.Unlock()
	if t != nil {
		select {
		case <-t.decided:
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.outcome, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	for {
		s, err := c.Show(ctx, gid)
		if err != nil {
			return 0, err
		}
		if s.Outcome != 0 {
			return s.Outcome, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Deliver handles a message for the coordinator: a vote, an
// acknowledgement or an outcome query. A vote or query about a transaction
// already decided is answered with the decision (so a late YES after an
// abort gets ABORT); one about a transaction never logged gets ABORT
// (presumed abort). It rejects (an error wrapping ErrRejected, with the
// reason) a message Validate refuses, one addressed to another node, a
// PREPARE or a decision, and a message about a transaction in progress
// (not yet finished) from a node that is not one of its participants;
// nothing is recorded or sent for it. Any other error means the message should be delivered again.
// Safe for concurrent use.
func (c *Coordinator) Deliver(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return rejected(err)
	}
	switch {
	case m.To != c.name:
		return rejected(fmt.Errorf("%s %s is addressed to %q, not to coordinator %q", m.Kind, m.GID, m.To, c.name))
	case m.Kind != KindVote && m.Kind != KindAck && m.Kind != KindQuery:
		return rejected(fmt.Errorf("%s %s from %q: a coordinator takes votes, acknowledgements and queries", m.Kind, m.GID, m.From))
	}
	c.mu.Lock()
	t := c.txs[m.GID]
	c.mu.Unlock()
	if t == nil {
		if m.Kind == KindVote || m.Kind == KindQuery {
			return c.answerFromLog(ctx, m)
		}
		return nil // an ack of a finished transaction
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.has(m.From) {
		return rejected(fmt.Errorf("%s %s from %q, which is not a participant of the transaction", m.Kind, m.GID, m.From))
	}
	switch m.Kind {
	case KindVote:
		return c.vote(ctx, t, m)
	case KindAck:
		return c.ack(ctx, t, m.From)
	case KindQuery:
		if t.outcome != 0 {
			c.sendDecision(ctx, t.gid, m.From, t.outcome, t.trace)
		}
	}
	return nil
}

// vote records a vote and decides when it can. Lock t.mu should be held.
func (c *Coordinator) vote(ctx context.Context, t *txn, m Message) error {
	if t.outcome != 0 {
		// Late or duplicated: the decision is made, answer with it.
		c.sendDecision(ctx, t.gid, m.From, t.outcome, t.trace)
		return nil
	}
	_, span := tracer().Start(contextOf(ctx, t.trace), "twopc vote "+m.Vote.String())
	span.SetAttributes(attribute.String(attrGID, t.gid), attribute.String(attrParticipant, m.From))
	span.End()
	t.votes[m.From] = m.Vote
	if m.Vote == No {
		t.noReason = fmt.Sprintf("%s voted no: %s", m.From, m.Reason)
	}
	if o, reason, ok := t.ready(); ok {
		return c.decide(ctx, t, o, reason)
	}
	return nil
}

// ready reports whether the votes decide the transaction: ABORT on any
// NO, COMMIT when every participant voted YES. Lock t.mu should be held.
func (t *txn) ready() (Outcome, string, bool) {
	all := true
	for _, b := range t.branches {
		switch t.votes[b.Participant] {
		case No:
			return Abort, t.noReason, true
		case 0:
			all = false
		}
	}
	if all {
		return Commit, "every participant voted yes", true
	}
	return 0, "", false
}

// decide logs the decision, then sends it to every participant. Lock t.mu
// should be held.
func (c *Coordinator) decide(ctx context.Context, t *txn, o Outcome, reason string) (err error) {
	ctx, span := tracer().Start(contextOf(ctx, t.trace), "twopc decide "+o.String())
	span.SetAttributes(attribute.String(attrGID, t.gid), attribute.String("twopc.reason", reason))
	defer func() { endSpan(span, err) }()
	if err := c.o.hook(ctx, StepDeciding, t.gid); err != nil {
		return err
	}
	state := stateCommitted
	if o == Abort {
		state = stateAborted
	}
	now := c.o.clock.Now()
	err = c.db.InTx(ctx, func(tx *outbox.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE troupe_twopc_tx SET state = ?, reason = ?, decided_at = ? WHERE gid = ? AND state = ?`,
			state, reason, now.UnixNano(), t.gid, statePreparing)
		if err != nil {
			return fmt.Errorf("twopc: log decision %s: %w", t.gid, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(fmt.Errorf("twopc: log decision %s: the transaction is no longer undecided", t.gid), err)
		}
		for p, v := range t.votes {
			if _, err := tx.Exec(ctx, `UPDATE troupe_twopc_branch SET vote = ? WHERE gid = ? AND participant = ?`, v.String(), t.gid, p); err != nil {
				return fmt.Errorf("twopc: log vote %s/%s: %w", t.gid, p, err)
			}
		}
		if c.o.onDecide != nil {
			return c.o.onDecide(ctx, tx, t.gid, o, reason)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.o.hook(ctx, StepDecided, t.gid); err != nil {
		return err
	}
	t.outcome = o
	close(t.decided)
	c.o.logger.LogAttrs(ctx, slog.LevelInfo, "twopc: decided", slog.String(logNode, c.name), slog.String(logGID, t.gid),
		slog.String("outcome", o.String()), slog.String("reason", reason))
	t.nextSend = now.Add(c.o.resendInterval)
	for _, b := range t.branches {
		c.sendDecision(ctx, t.gid, b.Participant, o, t.trace)
	}
	return nil
}

// ack records an acknowledgement; the last one finishes the transaction.
// Lock t.mu should be held.
func (c *Coordinator) ack(ctx context.Context, t *txn, from string) error {
	if t.outcome == 0 || t.finished {
		return nil
	}
	t.acked[from] = true
	for _, b := range t.branches {
		if !t.acked[b.Participant] {
			return nil
		}
	}
	now := c.o.clock.Now()
	err := c.db.InTx(ctx, func(tx *outbox.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE troupe_twopc_tx SET finished_at = ? WHERE gid = ?`, now.UnixNano(), t.gid); err != nil {
			return fmt.Errorf("twopc: log end %s: %w", t.gid, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE troupe_twopc_branch SET acked = 1 WHERE gid = ?`, t.gid); err != nil {
			return fmt.Errorf("twopc: log acks %s: %w", t.gid, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	t.finished = true
	c.mu.Lock()
	delete(c.txs, t.gid)
	c.mu.Unlock()
	return nil
}

// answerFromLog answers a vote or a query about a transaction that is not
// in memory (finished, or of no record) from the log.
func (c *Coordinator) answerFromLog(ctx context.Context, m Message) error {
	s, err := c.Show(ctx, m.GID)
	switch {
	case errors.Is(err, ErrUnknown):
		c.sendDecision(ctx, m.GID, m.From, Abort, m.Trace) // presumed abort
		return nil
	case err != nil:
		return err
	case s.Outcome != 0:
		c.sendDecision(ctx, m.GID, m.From, s.Outcome, m.Trace)
	}
	// Undecided and not ours in memory: Recover has not run yet, and will
	// abort it.
	return nil
}

// Tick aborts the transactions whose vote deadline passed, re-sends
// PREPARE to participants that have not voted and the decision to those
// that have not acknowledged it. Run calls it periodically; tests call it
// with a fake clock. Safe for concurrent use.
func (c *Coordinator) Tick(ctx context.Context) error {
	now := c.o.clock.Now()
	c.mu.Lock()
	open := make([]*txn, 0, len(c.txs))
	for _, t := range c.txs {
		open = append(open, t)
	}
	c.mu.Unlock()
	slices.SortFunc(open, func(a, b *txn) int { return strings.Compare(a.gid, b.gid) })
	var errs []error
	for _, t := range open {
		errs = append(errs, c.tick(ctx, t, now))
	}
	return errors.Join(errs...)
}

func (c *Coordinator) tick(ctx context.Context, t *txn, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished {
		return nil
	}
	if o, reason, ok := t.ready(); ok && t.outcome == 0 {
		// The deciding vote came, but logging the decision failed: retry.
		return c.decide(ctx, t, o, reason)
	}
	switch {
	case t.outcome == 0 && !now.Before(t.deadline):
		var missing []string
		for _, b := range t.branches {
			if t.votes[b.Participant] == 0 {
				missing = append(missing, b.Participant)
			}
		}
		return c.decide(ctx, t, Abort, "vote timeout: no vote from "+strings.Join(missing, ", "))
	case now.Before(t.nextSend):
		return nil
	}
	t.nextSend = now.Add(c.o.resendInterval)
	for _, b := range t.branches {
		switch {
		case t.outcome == 0 && t.votes[b.Participant] == 0:
			c.sendPrepare(ctx, t, b)
		case t.outcome != 0 && !t.acked[b.Participant]:
			c.sendDecision(ctx, t.gid, b.Participant, t.outcome, t.trace)
		}
	}
	return nil
}

// Recover loads the coordinator's unfinished transactions from its log:
// one with no logged decision is aborted (presumed abort: its votes were
// never logged, so it cannot commit), a decided one is sent its decision
// again. Call it once at start-up, before delivering messages; Run does.
func (c *Coordinator) Recover(ctx context.Context) error {
	txs, err := c.loadOpen(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range txs {
		owned, err := c.adopt(ctx, t)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if !owned {
			continue
		}
		t.mu.Lock()
		if t.outcome == 0 {
			errs = append(errs, c.decide(ctx, t, Abort, "coordinator restarted before deciding"))
		} else {
			for _, b := range t.branches {
				c.sendDecision(ctx, t.gid, b.Participant, t.outcome, t.trace)
			}
		}
		t.mu.Unlock()
	}
	return errors.Join(errs...)
}

// adopt puts t, loaded from the log, in memory for Recover, unless the
// coordinator knows its gid already; it reports whether t was adopted. A
// Begin of the same gid that is still logging it is waited for: when its
// insert finds the gid logged already (by a process that crashed), it
// forgets its own copy, and t is the one to recover; skipping t because
// of that passing copy left the transaction open for good.
func (c *Coordinator) adopt(ctx context.Context, t *txn) (bool, error) {
	for {
		c.mu.Lock()
		cur, known := c.txs[t.gid]
		if !known {
			c.txs[t.gid] = t
		}
		var begun chan struct{}
		if known {
			begun = cur.begun
		}
		c.mu.Unlock()
		switch {
		case !known:
			return true, nil
		case begun == nil:
			return false, nil // logged by this process, or adopted
		}
		if c.adoptWaits != nil {
			c.adoptWaits(t.gid)
		}
		select {
		case <-begun:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (c *Coordinator) loadOpen(ctx context.Context) ([]*txn, error) {
	rows, err := c.db.Query(ctx, `SELECT gid, state, trace, deadline FROM troupe_twopc_tx
		WHERE coordinator = ? AND finished_at IS NULL ORDER BY created_at, gid`, c.name)
	if err != nil {
		return nil, fmt.Errorf("twopc: load log: %w", err)
	}
	var txs []*txn
	now := c.o.clock.Now()
	for rows.Next() {
		var state, trace string
		var deadline int64
		t := &txn{votes: map[string]Vote{}, acked: map[string]bool{}, decided: make(chan struct{}), nextSend: now.Add(c.o.resendInterval)}
		if err := rows.Scan(&t.gid, &state, &trace, &deadline); err != nil {
			rows.Close()
			return nil, fmt.Errorf("twopc: load log: %w", err)
		}
		t.deadline = time.Unix(0, deadline)
		t.trace = decodeTrace(trace)
		t.outcome = outcomeOf(state)
		if t.outcome != 0 {
			close(t.decided)
		}
		txs = append(txs, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("twopc: load log: %w", err)
	}
	for _, t := range txs {
		bs, err := c.loadBranches(ctx, t.gid)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			t.branches = append(t.branches, b.Branch)
		}
	}
	return txs, nil
}

func outcomeOf(state string) Outcome {
	switch state {
	case stateCommitted:
		return Commit
	case stateAborted:
		return Abort
	}
	return 0
}

// BranchStatus is a branch as the coordinator's log has it.
type BranchStatus struct {
	Branch
	Vote  Vote // zero when not logged (votes are logged with the decision)
	Acked bool // logged when the last participant acknowledged
}

func (c *Coordinator) loadBranches(ctx context.Context, gid string) ([]BranchStatus, error) {
	return loadBranches(ctx, c.db, gid)
}

func loadBranches(ctx context.Context, db *outbox.DB, gid string) ([]BranchStatus, error) {
	rows, err := db.Query(ctx, `SELECT participant, payload, vote, acked FROM troupe_twopc_branch
		WHERE gid = ? ORDER BY position`, gid)
	if err != nil {
		return nil, fmt.Errorf("twopc: load branches of %s: %w", gid, err)
	}
	defer rows.Close()
	var bs []BranchStatus
	for rows.Next() {
		var b BranchStatus
		var payload, vote string
		var acked int
		if err := rows.Scan(&b.Participant, &payload, &vote, &acked); err != nil {
			return nil, fmt.Errorf("twopc: load branches of %s: %w", gid, err)
		}
		b.Payload = json.RawMessage(payload)
		b.Vote = map[string]Vote{"yes": Yes, "no": No}[vote]
		b.Acked = acked == 1
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("twopc: load branches of %s: %w", gid, err)
	}
	return bs, nil
}

// Run recovers the log, then checks deadlines and re-sends every tick
// interval until ctx ends. It returns ctx's error, or Recover's.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := c.Recover(ctx); err != nil {
		return err
	}
	return tickUntilDone(ctx, c.o, c.name, c.Tick)
}

// tickUntilDone calls tick every o.tickInterval until ctx ends, logging
// its errors as node's; it returns ctx's error.
func tickUntilDone(ctx context.Context, o options, node string, tick func(context.Context) error) error {
	tk := time.NewTicker(o.tickInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
			if err := tick(ctx); err != nil {
				o.logger.LogAttrs(ctx, slog.LevelWarn, "twopc: tick", slog.String(logNode, node), slog.Any("error", err))
			}
		}
	}
}

// errNoRows narrows sql.ErrNoRows for callers of Show.
func errNoRows(err error, gid string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrUnknown, gid)
	}
	return err
}

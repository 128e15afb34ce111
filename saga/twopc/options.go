package twopc

import (
	"context"
	"log/slog"
	"time"

	"github.com/troupehq/troupe/outbox"
)

// Step names a point in the protocol where a [Hook] runs.
type Step uint8

// Steps of the coordinator and of a participant.
const (
	// StepBegun: the coordinator logged the transaction and its
	// participants; PREPARE is not sent yet.
	StepBegun Step = iota + 1
	// StepDeciding: the coordinator is about to log its decision.
	StepDeciding
	// StepDecided: the decision is logged and not sent yet.
	StepDecided
	// StepPreparing: a participant prepared its branch inside the
	// transaction that records the prepared state, before the commit.
	StepPreparing
	// StepVoting: the prepared (or aborted) state is durable and the vote
	// is not sent yet.
	StepVoting
	// StepVoted: the vote is sent.
	StepVoted
	// StepApplied: a participant durably applied the decision and has not
	// acknowledged it yet.
	StepApplied
)

var stepNames = map[Step]string{
	StepBegun: "begun", StepDeciding: "deciding", StepDecided: "decided",
	StepPreparing: "preparing", StepVoting: "voting", StepVoted: "voted", StepApplied: "applied",
}

func (s Step) String() string {
	if n, ok := stepNames[s]; ok {
		return n
	}
	return "Step(?)"
}

// Hook runs at each [Step] of a node with the transaction's global id. An
// error stops the step there, as a crash at that point would: the fault
// injector of the crash tests, and a way to observe progress. It must be
// safe for concurrent use.
type Hook func(ctx context.Context, s Step, gid string) error

// Option configures a Coordinator or a Participant.
type Option interface{ apply(*options) }

type options struct {
	clock          Clock
	logger         *slog.Logger
	voteTimeout    time.Duration
	resendInterval time.Duration
	tickInterval   time.Duration
	hook           Hook
	onDecide       DecisionFunc
}

func newOptions(opts []Option) options {
	o := options{
		clock:          systemClock{},
		voteTimeout:    5 * time.Second,
		resendInterval: time.Second,
		tickInterval:   100 * time.Millisecond,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.hook == nil {
		o.hook = func(context.Context, Step, string) error { return nil }
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the clock that deadlines and re-sends are measured with.
func WithClock(c Clock) Option { return optionFunc(func(o *options) { o.clock = c }) }

// WithLogger sets the logger; nil discards.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(o *options) { o.logger = l }) }

// WithVoteTimeout bounds how long the coordinator waits for the votes
// before it aborts (5 s by default).
func WithVoteTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.voteTimeout = d })
}

// WithResendInterval sets how long a node waits for an answer before it
// sends again: PREPARE and the decision for a coordinator, the outcome
// query for a prepared participant (1 s by default).
func WithResendInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.resendInterval = d })
}

// WithTickInterval sets how often Run checks deadlines and re-sends
// (100 ms by default).
func WithTickInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.tickInterval = d })
}

// WithHook sets a [Hook] run at every [Step].
func WithHook(h Hook) Option { return optionFunc(func(o *options) { o.hook = h }) }

// DecisionFunc runs inside the transaction that logs a coordinator's
// decision on gid, so that what the application does about the outcome
// (settle an order, emit its event through the outbox) commits together
// with the decision, exactly once. An error fails the decision's logging;
// it is tried again.
type DecisionFunc func(ctx context.Context, tx *outbox.Tx, gid string, o Outcome, reason string) error

// WithDecisionTx sets the coordinator's DecisionFunc.
func WithDecisionTx(f DecisionFunc) Option { return optionFunc(func(o *options) { o.onDecide = f }) }

// Attribute keys of log records.
const (
	logGID         = "gid"
	logNode        = "twopc_node"
	logParticipant = "participant"
)

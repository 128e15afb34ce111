package saga

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/troupehq/troupe/handlers/dlq"
	"github.com/troupehq/troupe/internal/storetext"
	"github.com/troupehq/troupe/outbox"
)

// Action is what an operator does to an instance.
type Action string

// Operator actions.
const (
	// Resume re-drives the step or compensation whose message is
	// dead-lettered: its dead letter is replayed to its work queue, so the
	// handler runs it again (with a fresh retry budget). The instance
	// leaves state failed; if the handler fails again, a new dead letter
	// parks it again.
	Resume Action = "resume"
	// Skip gives up the dead-lettered step or compensation (the operator
	// made up for it by hand): the instance leaves state failed and that
	// compensation counts as done. The tracker invents no event: the
	// compensations that the skipped one would have triggered do not
	// start by themselves, so the instance stays compensating until their
	// events come, or an operator resolves it.
	Skip Action = "skip"
	// Resolve declares the instance settled by hand: state resolved,
	// whatever it was (but not after an ending).
	Resolve Action = "resolve"
)

// Errors of operator actions; match with errors.Is.
var (
	// ErrNotParked: resume and skip need an instance in state failed
	// because of a dead letter.
	ErrNotParked = errors.New("saga: instance not parked on a dead letter")
	// ErrEnded: the instance already ended (completed, compensated,
	// resolved).
	ErrEnded = errors.New("saga: instance already ended")
	// ErrNoActor: an action must say who does it.
	ErrNoActor = errors.New("saga: an operator action needs an actor")
	// ErrNoRedriver: the store was asked to resume without a way to reach
	// the dead letters.
	ErrNoRedriver = errors.New("saga: resume needs the bus (a Redriver)")
)

// Redriver replays the dead letter of a parked instance (entry is the
// dead-letter entry: its Queue is the dead-letter queue, its CausationID
// the letter's message id), recording actor as who replayed it.
type Redriver func(ctx context.Context, entry Entry, actor string, now time.Time) error

// DLQRedriver replays dead letters through connections that dial makes
// (e.g. dlq.Dial with the bus URL), with package dlq.
func DLQRedriver(dial func() (dlq.Conn, error)) Redriver {
	return func(ctx context.Context, e Entry, actor string, now time.Time) error {
		c, err := dial()
		if err != nil {
			return err
		}
		done, err := dlq.Replay(ctx, c, e.Queue, dlq.Filter{ID: e.CausationID}, actor, now)
		if err != nil {
			return err
		}
		if len(done) == 0 {
			return fmt.Errorf("saga: dead letter %s is not in %s (replayed already?)", e.CausationID, e.Queue)
		}
		return nil
	}
}

// Act does an operator action on instance id of saga (empty: whichever
// saga has it) and records it in the history: who (actor), when (now),
// what, and a note. Resume needs rd. It returns the instance afterwards.
// Errors: ErrNotFound, ErrNotParked, ErrEnded, ErrNoActor, ErrNoRedriver,
// or the redriver's. Safe for concurrent use; actions on one instance are
// serialized.
func (st *Store) Act(ctx context.Context, sagaName, id string, a Action, actor, note string, now time.Time, rd Redriver) (Instance, error) {
	// Free text from an operator: kept as every store keeps it.
	actor, note = storetext.Storable(strings.TrimSpace(actor)), storetext.Storable(note)
	if actor == "" {
		return Instance{}, ErrNoActor
	}
	in, err := st.Get(ctx, sagaName, id)
	if err != nil {
		return Instance{}, err
	}
	s, err := st.saga(in.Saga)
	if err != nil {
		return Instance{}, err
	}
	if a == Resume && rd == nil {
		return Instance{}, ErrNoRedriver
	}
	err = st.db.InTx(ctx, func(tx *outbox.Tx) error {
		if err := st.lock(ctx, tx, s.Name, id); err != nil {
			return err
		}
		history, err := st.history(ctx, tx, s.Name, id)
		if err != nil {
			return err
		}
		e, err := st.action(ctx, s, history, a, actor, note, now, rd)
		if err != nil {
			return err
		}
		_, _, _, err = st.record(ctx, tx, s, id, e)
		return err
	})
	if err != nil {
		return Instance{}, err
	}
	return st.Get(ctx, s.Name, id)
}

// action checks that a applies to the instance with history, does it
// (a replay for Resume) and returns its history entry.
func (st *Store) action(ctx context.Context, s *Saga, history []Entry, a Action, actor, note string, now time.Time, rd Redriver) (Entry, error) {
	status := Derive(s, history)
	switch status.State {
	case Completed, Compensated, Resolved:
		return Entry{}, fmt.Errorf("%w: %s", ErrEnded, status.State)
	}
	f := collect(s, history)
	e := Entry{At: now.UTC(), RecordedAt: now.UTC(), MessageID: uuid.Must(uuid.NewV7()).String(), Actor: actor, Error: note}
	switch a {
	case Resume, Skip:
		if f.failure == nil {
			return Entry{}, fmt.Errorf("%w (state %s)", ErrNotParked, status.State)
		}
		d := f.failure
		e.Step, e.Event, e.CausationID, e.Queue = d.Step, d.Event, d.CausationID, d.Queue
		if a == Resume {
			if err := rd(ctx, *d, actor, now); err != nil {
				return Entry{}, fmt.Errorf("resume %s: %w", d.CausationID, err)
			}
			e.Kind = ResumeEntry
			e.Meaning = fmt.Sprintf("resumed by %s: dead letter %s replayed from %s", actor, d.CausationID, d.Queue)
		} else {
			e.Kind = SkipEntry
			e.Meaning = fmt.Sprintf("skipped by %s: %s counts as done", actor, what(d))
		}
	case Resolve:
		e.Kind, e.Step = ResolveEntry, status.Step
		e.Meaning = fmt.Sprintf("resolved by %s (was %s)", actor, status.State)
	default:
		return Entry{}, fmt.Errorf("saga: unknown action %q (want resume, skip or resolve)", a)
	}
	return e, nil
}

func what(d *Entry) string {
	if d.Kind == CompensationDeadLetter {
		return "the compensation of step " + d.Step
	}
	return "step " + d.Step
}

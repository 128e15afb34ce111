package twopc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/troupehq/troupe/internal/storetext"
)

// ErrRejected marks a message that a node will not act on however often
// it comes: malformed (Validate's error), addressed to another node, of a
// kind the node does not take, or one the protocol forbids there (a
// decision or a PREPARE from a node other than the branch's coordinator,
// COMMIT of a branch never prepared or already aborted, a vote or query
// about a transaction from outside it). Deliver returns it joined with the
// reason; Bus.Serve moves such a message to the dead-letter queue of the
// node's queue (kind "rejected") rather than drop it or deliver it again.
var ErrRejected = errors.New("twopc: message rejected")

// rejected wraps why a node will not act on a message in ErrRejected.
func rejected(why error) error { return fmt.Errorf("%w: %w", ErrRejected, why) }

// Kind is the kind of a protocol message.
type Kind uint8

// Protocol messages. PREPARE and the decision go from the coordinator to a
// participant; the vote, the acknowledgement and the outcome query from a
// participant to the coordinator.
const (
	KindPrepare  Kind = iota + 1 // coordinator -> participant: prepare your branch and vote
	KindVote                     // participant -> coordinator: YES or NO
	KindDecision                 // coordinator -> participant: COMMIT or ABORT
	KindAck                      // participant -> coordinator: the decision is applied
	KindQuery                    // participant -> coordinator: what was decided?
)

var kindNames = map[Kind]string{KindPrepare: "prepare", KindVote: "vote", KindDecision: "decision", KindAck: "ack", KindQuery: "query"}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Vote is a participant's answer to PREPARE.
type Vote uint8

// Votes. A participant that voted YES has durably prepared its branch and
// holds its resources until it learns the outcome; a NO is a unilateral
// abort of the branch.
const (
	Yes Vote = iota + 1
	No
)

func (v Vote) String() string {
	switch v {
	case Yes:
		return "yes"
	case No:
		return "no"
	}
	return fmt.Sprintf("Vote(%d)", uint8(v))
}

// Outcome is the coordinator's decision on a transaction.
type Outcome uint8

// Outcomes.
const (
	Commit Outcome = iota + 1
	Abort
)

func (o Outcome) String() string {
	switch o {
	case Commit:
		return "commit"
	case Abort:
		return "abort"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Message is one protocol message. The global id (GID) is the correlation
// id of every message of a transaction; From names the node to reply to.
type Message struct {
	Kind    Kind    `json:"kind"`
	GID     string  `json:"gid"`
	From    string  `json:"from"`
	To      string  `json:"to"`
	Vote    Vote    `json:"vote,omitempty"`
	Outcome Outcome `json:"outcome,omitempty"`
	// Payload is the participant's branch of the transaction, on PREPARE.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Reason explains a NO vote.
	Reason string `json:"reason,omitempty"`
	// Trace is the W3C trace context of the transaction.
	Trace map[string]string `json:"trace,omitempty"`
}

func (m Message) String() string {
	s := fmt.Sprintf("%s %s %s->%s", m.Kind, m.GID, m.From, m.To)
	switch m.Kind {
	case KindVote:
		s += " " + m.Vote.String()
	case KindDecision:
		s += " " + m.Outcome.String()
	}
	return s
}

// Validate reports what makes m unusable: an unknown kind, no GID, no
// sender, a vote without a vote or a decision without an outcome, or text
// a node could not store on every database (PostgreSQL refuses text that
// is not UTF-8 or holds a NUL, and index entries of a few kilobytes): a
// gid, sender or recipient of more than MaxName bytes, or one, a reason
// or a payload that is not UTF-8 or holds a NUL.
func (m Message) Validate() error {
	switch {
	case kindNames[m.Kind] == "":
		return fmt.Errorf("twopc: message of unknown kind %d", m.Kind)
	case m.GID == "":
		return fmt.Errorf("twopc: %s message without a gid", m.Kind)
	case m.From == "":
		return fmt.Errorf("twopc: %s message %s without a sender", m.Kind, m.GID)
	case m.Kind == KindVote && m.Vote != Yes && m.Vote != No:
		return fmt.Errorf("twopc: vote %s with no vote", m.GID)
	case m.Kind == KindDecision && m.Outcome != Commit && m.Outcome != Abort:
		return fmt.Errorf("twopc: decision %s with no outcome", m.GID)
	}
	for _, f := range []struct {
		what, text string
		name       bool
	}{{"gid", m.GID, true}, {"sender", m.From, true}, {"recipient", m.To, true}, {"reason", m.Reason, false}, {"payload", string(m.Payload), false}} {
		switch {
		case f.name && len(f.text) > MaxName:
			return fmt.Errorf("twopc: %s message: the %s has %d bytes, more than %d", m.Kind, f.what, len(f.text), MaxName)
		case !utf8.ValidString(f.text):
			return fmt.Errorf("twopc: %s message: the %s is not UTF-8", m.Kind, f.what)
		case !storetext.Keepable(f.text):
			return fmt.Errorf("twopc: %s message: the %s holds a NUL", m.Kind, f.what)
		}
	}
	return nil
}

// MaxName is the longest gid or node name, in bytes.
const MaxName = 255

// Sender sends protocol messages to the node named by Message.To. Send may
// lose a message (the protocol re-sends) but must not corrupt it.
// Implementations are safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

package twopc_test

import (
	"testing"
	"time"

	"github.com/troupehq/troupe/saga/twopc"
)

// nth returns a filter that applies act to the n-th message (1-based) of
// kind sent to or from node, and delivers the others once.
func nth(kind twopc.Kind, node string, n int, act action) func(twopc.Message) action {
	seen := 0
	return func(m twopc.Message) action {
		if m.Kind != kind || (m.To != node && m.From != node) {
			return deliverIt
		}
		seen++
		if seen == n {
			return act
		}
		return deliverIt
	}
}

// every returns a filter that applies act to every message of kind sent to
// or from node.
func every(kind twopc.Kind, node string, act action) func(twopc.Message) action {
	return func(m twopc.Message) action {
		if m.Kind == kind && (m.To == node || m.From == node) {
			return act
		}
		return deliverIt
	}
}

var (
	ok      = []item{{Amount: 10}, {Amount: 2}}
	decline = []item{{Amount: 10}, {Amount: 2, Decline: true}}
)

// TestCrashPoints runs one transaction through every crash point and every
// lost, duplicated or late message, and checks after each delivery that no
// participant committed what another aborted, and at the end that every
// participant has the coordinator's outcome and nothing is held.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	runCrashPoints(t, sqliteURL)
}

type crashCase struct {
	name   string
	give   []item
	faults []fault
	filter func(twopc.Message) action
	want   twopc.Outcome
}

// crashCases are new each time: the filters count messages.
func crashCases() []crashCase {
	return []crashCase{
		{name: "no fault", give: ok, want: twopc.Commit},
		{name: "no fault, declined", give: decline, want: twopc.Abort},

		{name: "coordinator killed after logging begin, before PREPARE", give: ok, faults: []fault{{coordName, twopc.StepBegun}}, want: twopc.Abort},
		{name: "coordinator killed before logging the decision", give: ok, faults: []fault{{coordName, twopc.StepDeciding}}, want: twopc.Abort},
		{name: "coordinator killed after logging COMMIT", give: ok, faults: []fault{{coordName, twopc.StepDecided}}, want: twopc.Commit},
		{name: "coordinator killed after logging ABORT", give: decline, faults: []fault{{coordName, twopc.StepDecided}}, want: twopc.Abort},

		{name: "participant killed before its prepare is durable", give: ok, faults: []fault{{"payment", twopc.StepPreparing}}, want: twopc.Commit},
		{name: "participant killed prepared, before voting", give: ok, faults: []fault{{"payment", twopc.StepVoting}}, want: twopc.Commit},
		{name: "participant killed after voting", give: ok, faults: []fault{{"inventory", twopc.StepVoted}}, want: twopc.Commit},
		{name: "participant killed after voting NO", give: decline, faults: []fault{{"inventory", twopc.StepVoted}}, want: twopc.Abort},
		{name: "participant killed after applying COMMIT", give: ok, faults: []fault{{"payment", twopc.StepApplied}}, want: twopc.Commit},
		{name: "participant killed after applying ABORT", give: decline, faults: []fault{{"payment", twopc.StepApplied}}, want: twopc.Abort},
		{name: "both participants and the coordinator killed", give: ok, faults: []fault{
			{"payment", twopc.StepVoted}, {"inventory", twopc.StepVoting}, {coordName, twopc.StepDecided}, {"payment", twopc.StepApplied},
		}, want: twopc.Commit},

		{name: "PREPARE lost", give: ok, filter: nth(twopc.KindPrepare, "inventory", 1, dropIt), want: twopc.Commit},
		{name: "PREPARE duplicated", give: ok, filter: nth(twopc.KindPrepare, "payment", 1, duplicateIt), want: twopc.Commit},
		{name: "PREPARE always lost: vote timeout", give: ok, filter: every(twopc.KindPrepare, "inventory", dropIt), want: twopc.Abort},
		{name: "PREPARE late, after the abort", give: ok, filter: every(twopc.KindPrepare, "inventory", holdIt), want: twopc.Abort},
		{name: "vote lost", give: ok, filter: nth(twopc.KindVote, "payment", 1, dropIt), want: twopc.Commit},
		{name: "vote duplicated", give: ok, filter: nth(twopc.KindVote, "payment", 1, duplicateIt), want: twopc.Commit},
		{name: "NO vote duplicated", give: decline, filter: nth(twopc.KindVote, "inventory", 1, duplicateIt), want: twopc.Abort},
		{name: "YES votes late, after the abort", give: ok, filter: every(twopc.KindVote, "payment", holdIt), want: twopc.Abort},
		{name: "COMMIT lost", give: ok, filter: nth(twopc.KindDecision, "inventory", 1, dropIt), want: twopc.Commit},
		{name: "COMMIT duplicated", give: ok, filter: nth(twopc.KindDecision, "inventory", 1, duplicateIt), want: twopc.Commit},
		{name: "ABORT lost", give: decline, filter: nth(twopc.KindDecision, "payment", 1, dropIt), want: twopc.Abort},
		{name: "ABORT duplicated", give: decline, filter: nth(twopc.KindDecision, "payment", 1, duplicateIt), want: twopc.Abort},
		{name: "ack lost", give: ok, filter: nth(twopc.KindAck, "payment", 1, dropIt), want: twopc.Commit},
		{name: "query lost", give: ok, faults: []fault{{"payment", twopc.StepVoting}}, filter: nth(twopc.KindQuery, "payment", 1, dropIt), want: twopc.Commit},
	}
}

// runCrashPoints runs every crash case on a fresh database from newDB.
func runCrashPoints(t *testing.T, newDB func(testing.TB) string) {
	for _, tt := range crashCases() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, newDB(t), tt.faults...)
			w.filter = tt.filter
			w.releaseAt = w.clock.Now().Add(voteTimeout + time.Second)
			w.begin("tx-1", tt.give...)
			w.settle()
			got := w.checkSettled()["tx-1"]
			if got != tt.want {
				t.Fatalf("outcome %s, want %s", got, tt.want)
			}
			for _, f := range tt.faults {
				if !w.fired[f] {
					t.Fatalf("crash point %v of %s never reached", f.step, f.node)
				}
			}
		})
	}
}

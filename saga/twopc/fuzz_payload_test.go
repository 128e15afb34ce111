package twopc_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
)

// FuzzParticipantPayload's half of the fuzzing described in fuzz_test.go.

// FuzzParticipantPayload sends a participant a PREPARE whose branch
// payload is arbitrary bytes (Bus only carries JSON, but any Sender may
// deliver), twice, then the decision, then a well-formed PREPARE. The
// oracle, against encoding/json decoding the same bytes as the item:
//   - a payload that decodes is prepared: the resource gets exactly that
//     item, the branch's row stores the bytes, the vote is YES (NO when the
//     item declines), and the decision hands the resource the same item
//     again, decoded from the stored row;
//   - a payload that does not decode is voted NO with a reason saying what
//     is wrong ("bad payload: " and the decoder's error), the resource
//     never sees it, nothing is held, and a later COMMIT is refused while
//     ABORT is acknowledged;
//   - a payload that is not UTF-8 text without NULs (which PostgreSQL
//     could not store) is rejected (ErrRejected), at every delivery, with
//     nothing recorded and the resource never called;
//   - a redelivered PREPARE is answered alike and changes nothing;
//   - the participant then prepares a well-formed branch.
func FuzzParticipantPayload(f *testing.F) {
	for _, tt := range payloadSeeds {
		f.Add([]byte(tt.give), tt.commit)
	}
	w := newWorld(f, sqliteURL(f))
	const name = "ledger"
	res := &ledger{holds: holds{name}, calls: map[string][]string{}}
	p, err := twopc.NewParticipant(w.ctx, name, w.db, twopc.Resource[item](res), w, w.opts(name)...)
	if err != nil {
		f.Fatal(err)
	}
	var n int
	f.Fuzz(func(t *testing.T, payload []byte, commit bool) {
		w.t = t
		n++
		gid := fmt.Sprintf("branch-%d", n)
		stored, want, decodeErr := decodeItem(payload)
		vote, state, reason := twopc.Yes, "prepared", ""
		calls := []string{fmt.Sprintf("prepare %+v", want)}
		switch {
		case decodeErr != nil:
			vote, state, reason, calls = twopc.No, "aborted", "bad payload: "+decodeErr.Error(), nil
		case want.Decline:
			vote, state, reason = twopc.No, "aborted", "resource voted no"
		}
		prepare := twopc.Message{Kind: twopc.KindPrepare, GID: gid, From: coordName, To: name, Payload: payload}
		if !utf8.Valid(payload) || bytes.IndexByte(payload, 0) >= 0 {
			// Not text every database stores: rejected, every time, and
			// nothing recorded; the coordinator's vote deadline aborts it.
			for range 2 {
				ledgerRefused(t, w, p, prepare, twopc.ErrRejected)
			}
			var rows int
			if err := w.db.QueryRow(w.ctx, `SELECT COUNT(*) FROM troupe_twopc_participant WHERE participant = ? AND gid = ?`, name, gid).Scan(&rows); err != nil || rows != 0 {
				t.Fatalf("a rejected PREPARE left %d rows (%v)", rows, err)
			}
			if calls := res.take(gid); len(calls) > 0 {
				t.Fatalf("the resource saw a rejected PREPARE: %v", calls)
			}
			return
		}
		for range 2 { // a redelivery is answered alike
			ledgerRound(t, w, p, prepare, &twopc.Message{Kind: twopc.KindVote, GID: gid, From: name, To: coordName, Vote: vote, Reason: reason})
			checkLedger(t, w, res, gid, []string{state, coordName, reason, stored}, calls)
			calls = nil
		}

		decision := twopc.Message{Kind: twopc.KindDecision, GID: gid, From: coordName, To: name, Outcome: twopc.Abort}
		if commit {
			decision.Outcome = twopc.Commit
		}
		ack := &twopc.Message{Kind: twopc.KindAck, GID: gid, From: name, To: coordName}
		switch {
		case state == "prepared" && commit:
			state, calls = "committed", []string{fmt.Sprintf("commit %+v", want)}
		case state == "prepared":
			state, calls = "aborted", []string{fmt.Sprintf("abort %+v", want)}
		case commit: // COMMIT of an aborted branch: rejected
			ack = nil
		}
		if ack == nil {
			ledgerRefused(t, w, p, decision, twopc.ErrConflict)
		} else {
			ledgerRound(t, w, p, decision, ack)
		}
		checkLedger(t, w, res, gid, []string{state, coordName, reason, stored}, calls)

		next := twopc.Message{Kind: twopc.KindPrepare, GID: gid + "+1", From: coordName, To: name, Payload: json.RawMessage(`{"amount":1}`)}
		ledgerRound(t, w, p, next, &twopc.Message{Kind: twopc.KindVote, GID: next.GID, From: name, To: coordName, Vote: twopc.Yes})
		checkLedger(t, w, res, next.GID, []string{"prepared", coordName, "", `{"amount":1}`}, []string{"prepare {Amount:1 Decline:false}"})
	})
}

// payloadSeeds are payloads that decode, decline, and fail to decode in
// each way encoding/json knows, each with a decision.
var payloadSeeds = []struct {
	give   string
	commit bool
}{
	{give: `{"amount":3}`, commit: true},
	{give: `{"amount":3}`},
	{give: `{"amount":3,"decline":true}`, commit: true},
	{give: ``, commit: true},
	{give: `null`},
	{give: ` {"amount":4} `, commit: true},
	{give: `{"AMOUNT":2,"unknown":[1,{"x":null}]}`, commit: true},
	{give: `{"amount":-9223372036854775808}`, commit: true},
	{give: `{`, commit: true},
	{give: `{"amount":1}{"amount":2}`, commit: true},
	{give: `{"amount":1.5}`},
	{give: `{"amount":1e400}`},
	{give: `{"amount":"3"}`, commit: true},
	{give: `"three"`},
	{give: `[3]`, commit: true},
	{give: "{\"amount\":1,\"note\":\"\xff\"}", commit: true},
	{give: "\x00"},
	{give: "{\"amount\":1,\"note\":\"\\u0000\"}", commit: true},
}

// ledgerRound delivers m to p, which must take it and answer with reply
// (nothing when nil).
func ledgerRound(t *testing.T, w *world, p *twopc.Participant[item], m twopc.Message, reply *twopc.Message) {
	t.Helper()
	if err := p.Deliver(w.ctx, m); err != nil {
		t.Fatalf("%s: %v", m, err)
	}
	var want []twopc.Message
	if reply != nil {
		want = append(want, *reply)
	}
	sent := w.inflight
	w.inflight = nil
	if !reflect.DeepEqual(sent, want) {
		t.Fatalf("%s answered %#v, want %#v", m, sent, want)
	}
}

// ledgerRefused delivers m to p, which must reject it with an error
// wrapping ErrRejected and want, and send nothing.
func ledgerRefused(t *testing.T, w *world, p *twopc.Participant[item], m twopc.Message, want error) {
	t.Helper()
	if err := p.Deliver(w.ctx, m); !errors.Is(err, twopc.ErrRejected) || !errors.Is(err, want) {
		t.Fatalf("%s: %v; want a rejection (%v)", m, err, want)
	}
	sent := w.inflight
	w.inflight = nil
	if len(sent) > 0 {
		t.Fatalf("%s was rejected and answered %#v", m, sent)
	}
}

// checkLedger: branch gid's row is row (state, coordinator, reason,
// payload), the resource holds what the state says, and its calls since
// the last check were calls.
func checkLedger(t *testing.T, w *world, res *ledger, gid string, row, calls []string) {
	t.Helper()
	got := make([]string, 4)
	err := w.db.QueryRow(w.ctx, `SELECT state, coordinator, reason, payload FROM troupe_twopc_participant WHERE participant = ? AND gid = ?`,
		res.name, gid).Scan(&got[0], &got[1], &got[2], &got[3])
	if err != nil || !slices.Equal(got, row) {
		t.Fatalf("branch %s: %q (%v), want %q", gid, got, err, row)
	}
	wantHeld := map[string]string{"prepared": "held", "committed": "committed"}[row[0]]
	var held string
	err = w.db.QueryRow(w.ctx, `SELECT state FROM test_holds WHERE participant = ? AND gid = ?`, res.name, gid).Scan(&held)
	if (wantHeld == "") != errors.Is(err, sql.ErrNoRows) || held != wantHeld {
		t.Fatalf("branch %s is %s; the resource has %q (%v)", gid, row[0], held, err)
	}
	if got := res.take(gid); !slices.Equal(got, calls) {
		t.Fatalf("branch %s: the resource got %q, want %q", gid, got, calls)
	}
}

// ledger is FuzzParticipantPayload's resource: holds, remembering the
// item each call got, so that the test sees what the participant decoded
// at PREPARE and, from the stored branch, at the decision.
type ledger struct {
	holds
	mu    sync.Mutex
	calls map[string][]string // gid -> "prepare {Amount:1 Decline:false}", ...
}

func (l *ledger) record(gid, call string, p item) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[gid] = append(l.calls[gid], fmt.Sprintf("%s %+v", call, p))
}

func (l *ledger) take(gid string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	calls := l.calls[gid]
	delete(l.calls, gid)
	return calls
}

func (l *ledger) Prepare(ctx context.Context, tx *outbox.Tx, gid string, p item) (twopc.Vote, error) {
	l.record(gid, "prepare", p)
	return l.holds.Prepare(ctx, tx, gid, p)
}

func (l *ledger) Commit(ctx context.Context, tx *outbox.Tx, gid string, p item) error {
	l.record(gid, "commit", p)
	return l.holds.Commit(ctx, tx, gid, p)
}

func (l *ledger) Abort(ctx context.Context, tx *outbox.Tx, gid string, p item) error {
	l.record(gid, "abort", p)
	return l.holds.Abort(ctx, tx, gid, p)
}

package twopc_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
	"github.com/troupehq/troupe/transport/envelope"
)

// This file and fuzz_payload_test.go fuzz what package twopc decodes from
// bytes it does not control: a protocol message consumed from the bus
// (Bus.Serve decodes it, then hands it to a node's Deliver), and a
// branch's payload, which a participant decodes at PREPARE and again from
// its stored row at the decision. The nodes are the simulator's
// (sim_test.go) on one SQLite database, set up once per fuzz worker.
// Inputs do not depend on each other, so that a failing input fails again
// on its own: FuzzBusMessage restores the same state before each,
// FuzzParticipantPayload gives each a gid of its own.

// FuzzBusMessage's world.
const (
	fuzzPart    = "payment"  // the participant FuzzBusMessage sends to
	openGID     = "open"     // undecided: payment prepared and voted YES, inventory knows nothing
	doneGID     = "done"     // committed and finished
	declinedGID = "declined" // aborted (inventory voted NO) and finished
)

// Log messages of the bus the oracle waits for.
const (
	undecoded = "twopc: undecodable message" // bytes it cannot decode, dead-lettered
	rejection = "twopc: rejected message"    // a message its node rejected, dead-lettered
)

// fuzzTables are the tables whose rows make up the recorded state: the
// package's and the test resource's.
var fuzzTables = []string{"troupe_twopc_tx", "troupe_twopc_branch", "troupe_twopc_participant", "test_holds"}

// FuzzBusMessage publishes arbitrary bytes, with one arbitrary metadata
// entry, on the bus queue of the coordinator or of a participant, where
// the real Bus.Serve consumes them. The oracle:
//   - bytes that do not decode as a Message are refused by the bus with the
//     decoder's error (logged, dead-lettered), and reach no node;
//   - a decoded message reaches the node as decoded; the node rejects it
//     (ErrRejected, which the bus logs and dead-letters) exactly when the
//     protocol says it must: Validate refuses it (the error says why), it
//     is addressed to another node or is of a kind the node does not take,
//     it comes from a node other than the branch's coordinator (at the
//     participant) or from outside a transaction in progress (at the
//     coordinator), or it is a decision the branch's state contradicts;
//   - either way nothing recorded changes and nothing is sent;
//   - a valid message does exactly what the protocol says at that node: the
//     one branch or transaction it names makes only its legal transition,
//     the node answers with exactly the replies due, and no row of any
//     other transaction, or of any other node, changes;
//   - afterwards the node still handles well-formed messages sent with
//     Bus.Send correctly: a new transaction's, and the one that decides
//     "open" when the input left it undecided there.
func FuzzBusMessage(f *testing.F) {
	for _, tt := range busSeeds {
		f.Add(tt.toCoord, []byte(tt.give), tt.key, tt.value)
	}
	h := newBusFuzz(f)
	f.Fuzz(func(t *testing.T, toCoord bool, payload []byte, key, value string) {
		h.reset(t)
		node := fuzzPart
		if toCoord {
			node = coordName
		}
		before := readRows(t, h.w)
		got := h.publish(t, node, payload, key, value)
		var want twopc.Message
		decodeErr := json.Unmarshal(payload, &want)
		switch {
		case decodeErr != nil:
			checkUndecodable(t, got, decodeErr)
		case !got.delivered:
			t.Fatalf("a decodable message was refused as undecodable: %v", attr(got.refusal, "error"))
		case !reflect.DeepEqual(got.m, want):
			t.Fatalf("the node got %#v, want %#v", got.m, want)
		}
		sent := h.take()
		h.nodeLog.take()
		after := readRows(t, h.w)
		switch {
		case decodeErr != nil:
			checkNoEffect(t, before, after, sent)
		case mustReject(node, want, checkValidate(t, want), before):
			checkRejected(t, node, want, got)
			checkNoEffect(t, before, after, sent)
		case got.err != nil:
			t.Fatalf("%s failed on %s: %v; on a healthy database it takes every message the protocol allows", node, want, got.err)
		case node == coordName:
			checkAtCoordinator(t, want, before, after, sent)
		default:
			checkAtParticipant(t, want, before, after, sent)
		}
		h.probe(t, node, want.GID)
	})
}

type busSeed struct {
	toCoord    bool
	give       string
	key, value string
}

// busSeeds are one well-formed message of each kind to each node about
// each transaction of the world, and malformed variants.
var busSeeds = []busSeed{
	// To the participant: well-formed.
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":{"amount":3}}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":{"amount":3,"decline":true}}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":"three"}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment"}`},
	{give: `{"kind":1,"gid":"open","from":"coord","to":"payment","payload":{"amount":5}}`},
	{give: `{"kind":1,"gid":"declined","from":"coord","to":"payment","payload":{"amount":3}}`},
	{give: `{"kind":3,"gid":"open","from":"coord","to":"payment","outcome":1}`},
	{give: `{"kind":3,"gid":"open","from":"coord","to":"payment","outcome":2}`},
	{give: `{"kind":3,"gid":"fresh","from":"coord","to":"payment","outcome":1}`},
	{give: `{"kind":3,"gid":"fresh","from":"coord","to":"payment","outcome":2}`},
	{give: `{"kind":3,"gid":"done","from":"coord","to":"payment","outcome":1}`},
	{give: `{"kind":3,"gid":"done","from":"coord","to":"payment","outcome":2}`},
	{give: `{"kind":3,"gid":"declined","from":"coord","to":"payment","outcome":1}`},
	{give: `{"kind":2,"gid":"open","from":"coord","to":"payment","vote":1}`},
	{give: `{"kind":5,"gid":"open","from":"coord","to":"payment"}`},
	{give: `{"kind":1,"gid":"traced","from":"coord","to":"payment","payload":{"amount":1},"trace":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":{"amount":3}}`, key: "x-death", value: "[{"},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":{"amount":3}}`, key: envelope.UUIDHeader, value: ""},
	// To the participant: text no database may store.
	{give: `{"kind":1,"gid":"nul\u0000gid","from":"coord","to":"payment","payload":{"amount":3}}`},
	{give: `{"kind":1,"gid":"` + strings.Repeat("g", 256) + `","from":"coord","to":"payment","payload":{"amount":3}}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"payment","payload":{"note":"\u0000"}}`},
	// To the participant: well-formed, but not the protocol's.
	{give: `{"kind":1,"gid":"open","from":"usurper","to":"payment","payload":{"amount":5}}`},
	{give: `{"kind":3,"gid":"open","from":"usurper","to":"payment","outcome":1}`},
	{give: `{"kind":3,"gid":"declined","from":"usurper","to":"payment","outcome":2}`},
	{give: `{"kind":1,"gid":"fresh","from":"coord","to":"inventory","payload":{"amount":3}}`},
	{give: `{"kind":4,"gid":"open","from":"coord","to":"payment"}`},
	// To the participant: malformed.
	{give: ``},
	{give: `{`},
	{give: `null`},
	{give: `[]`},
	{give: `{}`},
	{give: `"prepare"`},
	{give: `{"kind":0,"gid":"open","from":"coord"}`},
	{give: `{"kind":6,"gid":"open","from":"coord"}`},
	{give: `{"kind":256,"gid":"open","from":"coord"}`},
	{give: `{"kind":-1,"gid":"open","from":"coord"}`},
	{give: `{"kind":"1","gid":"open","from":"coord"}`},
	{give: `{"kind":1,"gid":"","from":"coord"}`},
	{give: `{"kind":1,"gid":7,"from":"coord"}`},
	{give: `{"kind":1,"gid":"open"}`},
	{give: `{"kind":3,"gid":"open","from":"coord"}`},
	{give: `{"kind":3,"gid":"open","from":"coord","outcome":3}`},
	{give: `{"kind":1,"gid":"open","from":"coord","trace":{"traceparent":1}}`},
	{give: `{"kind":1,"gid":"open","from":"coord","payload":}`},
	{give: `{"kind":3,"gid":"open","from":"coord","outcome":1}x`},
	{give: "{\"kind\":1,\"gid\":\"\xff\",\"from\":\"coord\",\"payload\":\"\xff\"}"},
	// To the coordinator: well-formed.
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","to":"coord","vote":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","to":"coord","vote":2,"reason":"out of stock"}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"payment","to":"coord","vote":2}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"payment","to":"coord","vote":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"intruder","to":"coord","vote":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"nobody","from":"payment","to":"coord","vote":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"done","from":"inventory","to":"coord","vote":2}`},
	{toCoord: true, give: `{"kind":5,"gid":"done","from":"payment","to":"coord"}`},
	{toCoord: true, give: `{"kind":5,"gid":"declined","from":"inventory","to":"coord"}`},
	{toCoord: true, give: `{"kind":5,"gid":"open","from":"payment","to":"coord"}`},
	{toCoord: true, give: `{"kind":5,"gid":"nobody","from":"payment","to":"coord","trace":{}}`},
	{toCoord: true, give: `{"kind":4,"gid":"open","from":"payment","to":"coord"}`},
	{toCoord: true, give: `{"kind":4,"gid":"done","from":"payment","to":"coord"}`},
	{toCoord: true, give: `{"kind":1,"gid":"open","from":"coord","to":"coord","payload":{"amount":1}}`},
	{toCoord: true, give: `{"kind":3,"gid":"open","from":"payment","to":"coord","outcome":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","to":"payment","vote":1}`},
	{toCoord: true, give: `{"kind":5,"gid":"open","from":"intruder","to":"coord"}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","to":"coord","vote":2,"reason":"nul\u0000"}`},
	{toCoord: true, give: `{"kind":4,"gid":"open","from":"intruder","to":"coord"}`},
	// To the coordinator: malformed.
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory"}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","vote":3}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","vote":256}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"","vote":1}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","vote":true}`},
	{toCoord: true, give: `{"kind":2,"gid":"open","from":"inventory","vote":1,"trace":[]}`},
}

// busFuzz is FuzzBusMessage's world: the simulator's nodes, served on a
// private bundled broker by the real Bus.
type busFuzz struct {
	w          *world
	ctx        context.Context
	bus        *twopc.Bus
	pub        message.Publisher
	nodeLog    *records
	busRecords <-chan slog.Record // the bus's records of undecodable and rejected messages
	delivered  chan delivery
	seq        atomic.Int64
}

// fuzzBrokers names each busFuzz's broker apart.
var fuzzBrokers atomic.Int64

func newBusFuzz(f *testing.F) *busFuzz {
	w := newWorld(f, sqliteURL(f))
	busLog := &records{notify: []string{undecoded, rejection}, c: make(chan slog.Record, 1)}
	h := &busFuzz{w: w, ctx: w.ctx, nodeLog: &records{}, busRecords: busLog.c, delivered: make(chan delivery)}
	h.restartCoordinator()
	h.startParticipants()
	w.begin(doneGID, item{Amount: 1}, item{Amount: 2})
	w.begin(declinedGID, item{Amount: 3}, item{Amount: 4, Decline: true})
	w.settle()
	w.checkSettled()
	for _, tbl := range fuzzTables {
		if _, err := w.db.SQL().ExecContext(w.ctx, `CREATE TABLE fuzz_base_`+tbl+` AS SELECT * FROM `+tbl); err != nil {
			f.Fatal(err)
		}
	}

	tr, err := transport.Open(fmt.Sprintf("mem://twopc-fuzz-%d", fuzzBrokers.Add(1)))
	if err != nil {
		f.Fatal(err)
	}
	if h.bus, err = twopc.NewBus(tr, "", slog.New(busLog)); err != nil {
		f.Fatal(err)
	}
	if h.pub, err = tr.NewPublisher(bus.PublisherConfig{}); err != nil {
		f.Fatal(err)
	}
	if err := h.bus.Declare(w.ctx, coordName, fuzzPart); err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	var wg sync.WaitGroup
	f.Cleanup(func() { // before the database closes
		cancel()
		wg.Wait()
		tr.Close()
	})
	for _, n := range []string{coordName, fuzzPart} {
		wg.Go(func() { _ = h.bus.Serve(ctx, n, relay{node: n, c: h.delivered}, 1) })
	}
	return h
}

// restartCoordinator builds the coordinator anew from the database (a
// participant keeps nothing in memory that an input could leave behind),
// with the log the oracle reads.
func (h *busFuzz) restartCoordinator() {
	w := h.w
	c, err := twopc.NewCoordinator(w.ctx, coordName, w.db, w, h.opts(coordName)...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.coord = c
	w.check(c.Recover(w.ctx), coordName)
}

func (h *busFuzz) opts(node string) []twopc.Option {
	return append(h.w.opts(node), twopc.WithLogger(slog.New(h.nodeLog)))
}

// startParticipants builds the participants, with the log the oracle
// reads.
func (h *busFuzz) startParticipants() {
	w := h.w
	for _, n := range partNames {
		p, err := twopc.NewParticipant(w.ctx, n, w.db, twopc.Resource[item](holds{n}), w, h.opts(n)...)
		if err != nil {
			w.t.Fatal(err)
		}
		w.parts[n] = p
		w.check(p.Recover(w.ctx), n)
	}
}

// reset brings the world back to its baseline for the input run by t: the
// rows of "done" and "declined" as first logged, the coordinator restarted
// from them, and "open" begun again, prepared at payment, whose YES the
// coordinator has; inventory has not seen it.
func (h *busFuzz) reset(t *testing.T) {
	t.Helper()
	w := h.w
	w.t = t
	err := w.db.InTx(h.ctx, func(tx *outbox.Tx) error {
		for _, tbl := range fuzzTables {
			if _, err := tx.Exec(h.ctx, `DELETE FROM `+tbl); err != nil {
				return err
			}
			if _, err := tx.Exec(h.ctx, `INSERT INTO `+tbl+` SELECT * FROM fuzz_base_`+tbl); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.inflight, w.gids = nil, nil
	h.restartCoordinator()
	w.begin(openGID, item{Amount: 5}, item{Amount: 6})
	w.deliver(h.find(t, twopc.KindPrepare, fuzzPart))
	w.deliver(h.find(t, twopc.KindVote, coordName))
	w.inflight = nil
	h.nodeLog.take()
}

// find returns the index of the message of kind to node in flight.
func (h *busFuzz) find(t *testing.T, kind twopc.Kind, to string) int {
	t.Helper()
	i := slices.IndexFunc(h.w.inflight, func(m twopc.Message) bool { return m.Kind == kind && m.To == to })
	if i < 0 {
		t.Fatalf("no %s to %s in flight: %v", kind, to, h.w.inflight)
	}
	return i
}

// take returns the messages the nodes sent, and forgets them.
func (h *busFuzz) take() []twopc.Message {
	sent := h.w.inflight
	h.w.inflight = nil
	return sent
}

// delivery is a message Bus.Serve decoded and handed to node. The test's
// goroutine, which owns the world, delivers it and sends the node's answer
// back on reply.
type delivery struct {
	node  string
	m     twopc.Message
	reply chan error
}

// relay is the Deliverer that Bus.Serve hands node's messages to.
type relay struct {
	node string
	c    chan<- delivery
}

func (r relay) Deliver(ctx context.Context, m twopc.Message) error {
	d := delivery{node: r.node, m: m, reply: make(chan error, 1)}
	select {
	case r.c <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-d.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outcome is what became of a message published on the bus: delivered to
// its node (as m, which answered err), or refused as undecodable. refusal
// is the bus's log record of an undecodable message, or of a delivered one
// the node rejected, which says why and where it was dead-lettered.
type outcome struct {
	delivered bool
	m         twopc.Message
	err       error
	refusal   slog.Record
}

// publish publishes payload with a metadata entry on node's queue, as a
// peer would, and waits until the bus delivered or refused it.
func (h *busFuzz) publish(t *testing.T, node string, payload []byte, key, value string) outcome {
	t.Helper()
	msg := message.NewMessage(fmt.Sprintf("fuzz-%d", h.seq.Add(1)), payload)
	msg.Metadata.Set(envelope.EventKey, "twopc.fuzz")
	msg.Metadata.Set(envelope.ContentTypeKey, "application/json")
	msg.Metadata.Set(key, value)
	if err := h.pub.Publish(twopc.Topic(node), msg); err != nil {
		t.Fatalf("publish %q with metadata %q=%q: %v", payload, key, value, err)
	}
	return h.await(t)
}

// await waits for the bus to deliver or refuse the next message; it
// delivers a delivered one to its node, and when the node rejects it,
// waits for the bus to dead-letter it.
func (h *busFuzz) await(t *testing.T) outcome {
	t.Helper()
	select {
	case d := <-h.delivered:
		got := outcome{delivered: true, m: d.m, err: handOver(h.ctx, h.w.node(d.node), d)}
		if errors.Is(got.err, twopc.ErrRejected) {
			select {
			case got.refusal = <-h.busRecords:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s was rejected (%v) and the bus did not dead-letter it in 10s", d.m, got.err)
			}
		}
		return got
	case rec := <-h.busRecords:
		return outcome{refusal: rec}
	case <-time.After(10 * time.Second):
		t.Fatal("the bus neither delivered nor refused the message in 10s")
	}
	return outcome{}
}

// handOver delivers d to n, and hands n's answer back to the bus.
func handOver(ctx context.Context, n twopc.Deliverer, d delivery) (err error) {
	defer func() { d.reply <- err }()
	return n.Deliver(ctx, d.m)
}

// probe checks that node still handles well-formed messages, sent over
// the bus with Bus.Send: those of a new transaction, about a gid other
// than avoid, and the one that finishes "open" at node when the input left
// it undecided there.
func (h *busFuzz) probe(t *testing.T, node, avoid string) {
	t.Helper()
	gid := "probe"
	for gid == avoid {
		gid += "'"
	}
	if node == coordName {
		h.probeCoordinator(t, gid)
	} else {
		h.probeParticipant(t, gid)
	}
	h.finishOpen(t, node)
}

func (h *busFuzz) probeParticipant(t *testing.T, gid string) {
	t.Helper()
	prepare := twopc.Message{Kind: twopc.KindPrepare, GID: gid, From: coordName, To: fuzzPart, Payload: json.RawMessage(`{"amount":7}`)}
	h.roundTrip(t, prepare, twopc.Message{Kind: twopc.KindVote, GID: gid, From: fuzzPart, To: coordName, Vote: twopc.Yes})
	commit := twopc.Message{Kind: twopc.KindDecision, GID: gid, From: coordName, To: fuzzPart, Outcome: twopc.Commit}
	h.roundTrip(t, commit, twopc.Message{Kind: twopc.KindAck, GID: gid, From: fuzzPart, To: coordName})
	if s, err := h.w.parts[fuzzPart].BranchState(h.ctx, gid); err != nil || s != "committed" {
		t.Fatalf("probe %s at %s: %q, %v; want committed", gid, fuzzPart, s, err)
	}
}

func (h *busFuzz) probeCoordinator(t *testing.T, gid string) {
	t.Helper()
	if err := h.w.coord.Begin(h.ctx, gid, unitBranches(t)); err != nil {
		t.Fatalf("probe: begin %s: %v", gid, err)
	}
	h.take() // PREPARE
	yes := twopc.Message{Kind: twopc.KindVote, GID: gid, From: partNames[0], To: coordName, Vote: twopc.Yes}
	h.roundTrip(t, yes)
	yes.From = partNames[1]
	h.roundTrip(t, yes, decisions(gid, twopc.Commit)...)
	if s, err := h.w.coord.Show(h.ctx, gid); err != nil || s.Outcome != twopc.Commit {
		t.Fatalf("probe %s: %+v, %v; want committed", gid, s, err)
	}
}

// decisions is the coordinator's decision o on gid to every participant.
func decisions(gid string, o twopc.Outcome) []twopc.Message {
	var ms []twopc.Message
	for _, p := range partNames {
		ms = append(ms, twopc.Message{Kind: twopc.KindDecision, GID: gid, From: coordName, To: p, Outcome: o})
	}
	return ms
}

// finishOpen sends node the message that decides "open" (inventory's YES
// to the coordinator, COMMIT to payment), when the fuzzed input left it
// undecided there, and checks that it commits.
func (h *busFuzz) finishOpen(t *testing.T, node string) {
	t.Helper()
	if node == coordName {
		s, err := h.w.coord.Show(h.ctx, openGID)
		switch {
		case err != nil:
			t.Fatal(err)
		case s.Outcome != 0:
			return
		}
		yes := twopc.Message{Kind: twopc.KindVote, GID: openGID, From: partNames[1], To: coordName, Vote: twopc.Yes}
		h.roundTrip(t, yes, decisions(openGID, twopc.Commit)...)
		if s, err := h.w.coord.Show(h.ctx, openGID); err != nil || s.Outcome != twopc.Commit {
			t.Fatalf("%s after the last YES: %+v, %v; want committed", openGID, s, err)
		}
		return
	}
	part := h.w.parts[fuzzPart]
	s, err := part.BranchState(h.ctx, openGID)
	switch {
	case err != nil:
		t.Fatal(err)
	case s != "prepared":
		return
	}
	commit := twopc.Message{Kind: twopc.KindDecision, GID: openGID, From: coordName, To: fuzzPart, Outcome: twopc.Commit}
	h.roundTrip(t, commit, twopc.Message{Kind: twopc.KindAck, GID: openGID, From: fuzzPart, To: coordName})
	if s, err := part.BranchState(h.ctx, openGID); err != nil || s != "committed" {
		t.Fatalf("%s after COMMIT: %q, %v; want committed", openGID, s, err)
	}
}

// roundTrip sends m with Bus.Send and checks that its node got it, handled
// it, and answered with exactly replies.
func (h *busFuzz) roundTrip(t *testing.T, m twopc.Message, replies ...twopc.Message) {
	t.Helper()
	if err := h.bus.Send(h.ctx, m); err != nil {
		t.Fatalf("probe: send %s: %v", m, err)
	}
	got := h.await(t)
	switch {
	case !got.delivered:
		t.Fatalf("probe: %s refused: %v", m, attr(got.refusal, "error"))
	case !reflect.DeepEqual(got.m, m):
		t.Fatalf("probe: the node got %#v, want %#v", got.m, m)
	case got.err != nil:
		t.Fatalf("probe: %s: %v", m, got.err)
	}
	if sent := h.take(); !reflect.DeepEqual(sent, replies) {
		t.Fatalf("probe: %s answered %v, want %v", m, sent, replies)
	}
}

// checkUndecodable: the bus refused the bytes with the decoder's error,
// naming the message.
func checkUndecodable(t *testing.T, got outcome, decodeErr error) {
	t.Helper()
	if got.delivered {
		t.Fatalf("bytes that do not decode (%v) were delivered as %#v", decodeErr, got.m)
	}
	if got.refusal.Message != undecoded {
		t.Fatalf("undecodable bytes logged as %q, want %q", got.refusal.Message, undecoded)
	}
	logged, _ := attr(got.refusal, "error").Any().(error)
	if logged == nil || logged.Error() != decodeErr.Error() {
		t.Fatalf("refused with %v, want the decoder's %v", logged, decodeErr)
	}
	if attr(got.refusal, "message_id").String() == "" {
		t.Fatalf("the refusal does not name the message: %v", got.refusal)
	}
}

// checkValidate: Validate rejects m exactly when the protocol's rules do,
// with an error naming the problem; it returns Validate's error.
func checkValidate(t *testing.T, m twopc.Message) error {
	t.Helper()
	problem := malformed(m)
	err := m.Validate()
	switch {
	case err == nil && problem != "":
		t.Fatalf("Validate accepts %#v, which has %s", m, problem)
	case err != nil && problem == "":
		t.Fatalf("Validate rejects the well-formed %#v: %v", m, err)
	case err != nil && (!strings.HasPrefix(err.Error(), "twopc: ") || !strings.Contains(err.Error(), problem)):
		t.Fatalf("Validate rejects %#v with %q, which does not say %q", m, err, problem)
	}
	return err
}

// malformed returns what makes m unusable by the protocol, the word
// Validate's error must use; "" when nothing does.
func malformed(m twopc.Message) string {
	switch {
	case m.Kind < twopc.KindPrepare || m.Kind > twopc.KindQuery:
		return "unknown kind"
	case m.GID == "":
		return "gid"
	case m.From == "":
		return "sender"
	case m.Kind == twopc.KindVote && m.Vote != twopc.Yes && m.Vote != twopc.No:
		return "no vote"
	case m.Kind == twopc.KindDecision && m.Outcome != twopc.Commit && m.Outcome != twopc.Abort:
		return "no outcome"
	}
	for _, f := range []struct {
		text string
		name bool
	}{{m.GID, true}, {m.From, true}, {m.To, true}, {m.Reason, false}, {string(m.Payload), false}} {
		switch {
		case f.name && len(f.text) > twopc.MaxName:
			return fmt.Sprintf("more than %d", twopc.MaxName)
		case !utf8.ValidString(f.text):
			return "not UTF-8"
		case strings.IndexByte(f.text, 0) >= 0:
			return "holds a NUL"
		}
	}
	return ""
}

// mustReject: the decodable message m must be rejected at node, whose
// rows were before; invalid is Validate's error on m.
func mustReject(node string, m twopc.Message, invalid error, before rows) bool {
	if invalid != nil || m.To != node {
		return true
	}
	if node == coordName {
		if m.Kind != twopc.KindVote && m.Kind != twopc.KindAck && m.Kind != twopc.KindQuery {
			return true
		}
		was := before.tables["troupe_twopc_tx"][m.GID]
		return was != nil && was[0] == "preparing" && !slices.Contains(partNames, m.From)
	}
	if m.Kind != twopc.KindPrepare && m.Kind != twopc.KindDecision {
		return true
	}
	was := before.tables["troupe_twopc_participant"][rowKey(fuzzPart, m.GID)]
	switch {
	case was != nil && was[1] != m.From: // not the branch's coordinator
		return true
	case m.Kind == twopc.KindPrepare:
		return false
	case was == nil: // COMMIT of a branch never prepared
		return m.Outcome == twopc.Commit
	}
	want := map[twopc.Outcome]string{twopc.Commit: "committed", twopc.Abort: "aborted"}[m.Outcome]
	return was[0] != want && was[0] != "prepared" // a contradiction
}

// checkRejected: node rejected m with an error wrapping ErrRejected (and
// Validate's error, when Validate refuses m), and the bus dead-lettered m
// in the dead-letter queue of node's queue, logging that error.
func checkRejected(t *testing.T, node string, m twopc.Message, got outcome) {
	t.Helper()
	if !errors.Is(got.err, twopc.ErrRejected) {
		t.Fatalf("%s answered %v; the protocol rejects it", m, got.err)
	}
	if invalid := m.Validate(); invalid != nil && !strings.HasSuffix(got.err.Error(), invalid.Error()) {
		t.Fatalf("%s rejected with %q, not with Validate's %q", m, got.err, invalid)
	}
	logged, _ := attr(got.refusal, "error").Any().(error)
	switch {
	case got.refusal.Message != rejection:
		t.Fatalf("rejected %s logged as %q, want %q", m, got.refusal.Message, rejection)
	case logged == nil || logged.Error() != got.err.Error():
		t.Fatalf("rejected %s logged with %v, want the node's %v", m, logged, got.err)
	case attr(got.refusal, "dead_letter_queue").String() != bus.DeadLetterQueue(twopc.Topic(node)):
		t.Fatalf("rejected %s dead-lettered in %q, want %q", m, attr(got.refusal, "dead_letter_queue"), bus.DeadLetterQueue(twopc.Topic(node)))
	}
}

func checkNoEffect(t *testing.T, before, after rows, sent []twopc.Message) {
	t.Helper()
	if d := before.changed(after); len(d) > 0 {
		t.Fatalf("a refused message changed %v", d)
	}
	if len(sent) > 0 {
		t.Fatalf("a refused message was answered with %v", sent)
	}
}

// checkAtParticipant: the valid message m changed at most its own branch at
// the participant, as the protocol says, and was answered as it says.
func checkAtParticipant(t *testing.T, m twopc.Message, before, after rows, sent []twopc.Message) {
	t.Helper()
	key := rowKey(fuzzPart, m.GID)
	for _, k := range before.changed(after) {
		if k != "troupe_twopc_participant "+key && k != "test_holds "+key {
			t.Fatalf("%s changed %s", m, k)
		}
	}
	wantRow, reply := atParticipant(m, before.tables["troupe_twopc_participant"][key])
	if got := after.tables["troupe_twopc_participant"][key]; !slices.Equal(got, wantRow) {
		t.Fatalf("%s: branch %q, want %q", m, got, wantRow)
	}
	checkHold(t, m, wantRow, before.tables["test_holds"][key], after.tables["test_holds"][key])
	var want []twopc.Message
	if reply != nil {
		want = append(want, *reply)
	}
	if !reflect.DeepEqual(sent, want) {
		t.Fatalf("%s answered %#v, want %#v", m, sent, want)
	}
}

// atParticipant is the protocol at the participant: the row of its branch
// after m, a message it takes (not one mustReject rejects), given the row
// before (nil when none), and its answer. A row is state, coordinator,
// reason, payload, trace.
func atParticipant(m twopc.Message, was []string) (row []string, reply *twopc.Message) {
	answer := func(kind twopc.Kind, v twopc.Vote, reason string) *twopc.Message {
		return &twopc.Message{Kind: kind, GID: m.GID, From: fuzzPart, To: m.From, Vote: v, Reason: reason, Trace: m.Trace}
	}
	switch {
	case m.Kind == twopc.KindPrepare && was != nil: // a duplicate, or after the decision
		if was[0] == "aborted" {
			return was, answer(twopc.KindVote, twopc.No, was[2])
		}
		return was, answer(twopc.KindVote, twopc.Yes, was[2])
	case m.Kind == twopc.KindPrepare:
		payload, p, err := decodeItem(m.Payload)
		switch {
		case err != nil:
			reason := "bad payload: " + err.Error()
			return []string{"aborted", m.From, reason, payload, traceColumn(m.Trace)}, answer(twopc.KindVote, twopc.No, reason)
		case p.Decline:
			reason := "resource voted no"
			return []string{"aborted", m.From, reason, payload, traceColumn(m.Trace)}, answer(twopc.KindVote, twopc.No, reason)
		}
		return []string{"prepared", m.From, "", payload, traceColumn(m.Trace)}, answer(twopc.KindVote, twopc.Yes, "")
	}
	// A decision: ABORT of a branch never prepared, a duplicate, or the
	// decision on a prepared branch.
	want := map[twopc.Outcome]string{twopc.Commit: "committed", twopc.Abort: "aborted"}[m.Outcome]
	switch {
	case was == nil: // remembered, for a late PREPARE
		return []string{"aborted", m.From, "aborted before prepare", "null", ""}, answer(twopc.KindAck, 0, "")
	case was[0] == want:
		return was, answer(twopc.KindAck, 0, "")
	}
	return append([]string{want}, was[1:]...), answer(twopc.KindAck, 0, "")
}

// checkHold: the resource holds what a prepared branch prepared, keeps
// what a committed one committed, and nothing else.
func checkHold(t *testing.T, m twopc.Message, branch, was, hold []string) {
	t.Helper()
	var state string
	if branch != nil {
		state = map[string]string{"prepared": "held", "committed": "committed"}[branch[0]]
	}
	switch {
	case state == "" && hold == nil:
		return
	case state == "" || hold == nil || hold[0] != state:
		t.Fatalf("%s: branch %q with hold %q", m, branch, hold)
	case was != nil && hold[1] != was[1]:
		t.Fatalf("%s: hold changed from %q to %q", m, was, hold)
	case was == nil && m.Kind != twopc.KindPrepare:
		t.Fatalf("%s made hold %q", m, hold)
	case was == nil:
		_, p, _ := decodeItem(m.Payload)
		if hold[1] != strconv.Itoa(p.Amount) {
			t.Fatalf("%s: holds %s, the payload says %d", m, hold[1], p.Amount)
		}
	}
}

// checkAtCoordinator: the valid message m changed at most its own
// transaction in the coordinator's log, as the protocol says, and the
// coordinator told nobody an outcome but the logged one (or ABORT, when it
// has no record).
func checkAtCoordinator(t *testing.T, m twopc.Message, before, after rows, sent []twopc.Message) {
	t.Helper()
	allowed := []string{"troupe_twopc_tx " + m.GID}
	for _, p := range partNames {
		allowed = append(allowed, "troupe_twopc_branch "+rowKey(m.GID, p))
	}
	for _, k := range before.changed(after) {
		if !slices.Contains(allowed, k) {
			t.Fatalf("%s changed %s", m, k)
		}
	}
	was := before.tables["troupe_twopc_tx"][m.GID]
	state, replies := atCoordinator(m, was)
	now := after.tables["troupe_twopc_tx"][m.GID]
	switch {
	case was == nil && now != nil:
		t.Fatalf("%s logged a transaction of no record: %q", m, now)
	case was != nil && now == nil:
		t.Fatalf("%s erased transaction %q", m, was)
	case was != nil && now[0] != state:
		t.Fatalf("%s: transaction %q, want state %s", m, now, state)
	case was != nil && state == was[0] && !slices.Equal(now, was):
		t.Fatalf("%s: transaction %q, was %q", m, now, was)
	}
	if !reflect.DeepEqual(sent, replies) {
		t.Fatalf("%s answered %#v, want %#v", m, sent, replies)
	}
}

// atCoordinator is the protocol at the coordinator: the state of m.GID in
// its log after the valid message m, given the row before (nil when
// none), and the decisions it sends.
func atCoordinator(m twopc.Message, was []string) (state string, replies []twopc.Message) {
	decision := func(to string, o twopc.Outcome, trace map[string]string) twopc.Message {
		return twopc.Message{Kind: twopc.KindDecision, GID: m.GID, From: coordName, To: to, Outcome: o, Trace: trace}
	}
	asked := m.Kind == twopc.KindVote || m.Kind == twopc.KindQuery
	switch {
	case was == nil && asked: // presumed abort
		return "", []twopc.Message{decision(m.From, twopc.Abort, m.Trace)}
	case was == nil:
		return "", nil
	case was[0] != "preparing" && asked: // finished: answered from the log
		return was[0], []twopc.Message{decision(m.From, map[string]twopc.Outcome{"committed": twopc.Commit, "aborted": twopc.Abort}[was[0]], m.Trace)}
	case was[0] != "preparing" || m.Kind != twopc.KindVote || !slices.Contains(partNames, m.From):
		return was[0], nil
	}
	// "open": payment voted YES; this vote may decide it.
	votes := map[string]twopc.Vote{fuzzPart: twopc.Yes, m.From: m.Vote}
	o := twopc.Commit
	switch {
	case slices.Contains(slices.Collect(maps.Values(votes)), twopc.No):
		o = twopc.Abort
	case len(votes) < len(partNames):
		return was[0], nil
	}
	return map[twopc.Outcome]string{twopc.Commit: "committed", twopc.Abort: "aborted"}[o], decisions(m.GID, o)
}

// decodeItem decodes a branch payload as a participant does: the column it
// stores, and the item.
func decodeItem(raw []byte) (string, item, error) {
	payload := string(raw)
	if payload == "" {
		payload = "null"
	}
	var p item
	err := json.Unmarshal([]byte(payload), &p)
	return payload, p, err
}

// traceColumn is how a participant stores a trace carrier.
func traceColumn(c map[string]string) string {
	if len(c) == 0 {
		return ""
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// rows is the recorded state: the rows of fuzzTables by table and key, each
// row as text.
type rows struct {
	tables map[string]map[string][]string
}

// rowQueries select each table's rows, their key columns first; keyCols
// says how many.
var rowQueries = map[string]struct {
	q       string
	keyCols int
}{
	"troupe_twopc_tx":          {`SELECT gid, state, reason, decided_at, finished_at, deadline FROM troupe_twopc_tx`, 1},
	"troupe_twopc_branch":      {`SELECT gid, participant, vote, acked, payload, position FROM troupe_twopc_branch`, 2},
	"troupe_twopc_participant": {`SELECT participant, gid, state, coordinator, reason, payload, trace FROM troupe_twopc_participant`, 2},
	"test_holds":               {`SELECT participant, gid, state, amount FROM test_holds`, 2},
}

func readRows(t *testing.T, w *world) rows {
	t.Helper()
	r := rows{tables: map[string]map[string][]string{}}
	for _, tbl := range fuzzTables {
		r.tables[tbl] = readTable(t, w, rowQueries[tbl].q, rowQueries[tbl].keyCols)
	}
	return r
}

func readTable(t *testing.T, w *world, q string, keyCols int) map[string][]string {
	t.Helper()
	rs, err := w.db.SQL().QueryContext(w.ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for rs.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = v.String
		}
		out[rowKey(row[:keyCols]...)] = row[keyCols:]
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rowKey joins key columns. Participant names have no "/", so the key of
// a branch or a participant's row is unambiguous.
func rowKey(cols ...string) string { return strings.Join(cols, "/") }

// changed returns "table key" for every row that differs between r and
// after.
func (r rows) changed(after rows) []string {
	var out []string
	for _, tbl := range fuzzTables {
		a, b := r.tables[tbl], after.tables[tbl]
		for k := range a {
			if !slices.Equal(a[k], b[k]) {
				out = append(out, tbl+" "+k)
			}
		}
		for k := range b {
			if _, ok := a[k]; !ok {
				out = append(out, tbl+" "+k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// records is a slog.Handler that keeps what is logged, and hands the
// records with message notify to c as well. Safe for concurrent use.
type records struct {
	notify []string // messages of the records sent on c rather than kept
	c      chan slog.Record

	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }

func (r *records) Handle(ctx context.Context, rec slog.Record) error {
	if slices.Contains(r.notify, rec.Message) {
		select {
		case r.c <- rec.Clone():
		case <-ctx.Done(): // the bus is stopping
		}
		return nil
	}
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}

func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// take returns the records kept, and forgets them.
func (r *records) take() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := r.recs
	r.recs = nil
	return recs
}

// attr returns the value of rec's attribute key; the zero Value when none.
func attr(rec slog.Record, key string) slog.Value {
	var v slog.Value
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

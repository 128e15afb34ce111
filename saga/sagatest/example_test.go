package sagatest_test

import (
	"context"
	"fmt"
	"os"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga"
	"github.com/troupehq/troupe/saga/sagatest"
)

// A two-step choreography: the desk opens a ticket, an agent takes it.

type TicketOpened struct {
	ID string `json:"id"`
}

func (TicketOpened) EventName() string { return "ticket.opened" }

type TicketAssigned struct {
	ID    string `json:"id"`
	Agent string `json:"agent"`
}

func (TicketAssigned) EventName() string { return "ticket.assigned" }

var support = saga.Saga{
	Name:  "support",
	Start: TicketOpened{}.EventName(),
	Steps: []saga.Step{
		{Name: "open", Service: "desk", Success: TicketOpened{}.EventName(), NoCompensation: "nothing to undo"},
		{Name: "assign", Service: "agents", Trigger: TicketOpened{}.EventName(),
			Success: TicketAssigned{}.EventName(), NoCompensation: "last step"},
	},
	Completed: []string{TicketAssigned{}.EventName()},
}

// The agents' service crashes after committing an assignment and before
// acking ticket.opened; the broker redelivers it, the inbox skips it, and
// the ticket is assigned once.
func Example() {
	t := newExampleT() // in a test: sagatest.New(t) with the test's *testing.T
	defer t.cleanup()
	h := sagatest.New(t)
	h.StartTracker(&support)

	agents := h.Router("agents")
	handlers.MustHandleTx(agents, "assign", handlers.TxHandlerFunc[TicketOpened](
		func(ctx context.Context, tx *outbox.Tx, e TicketOpened) error {
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS assignments (ticket TEXT, agent TEXT)`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO assignments VALUES (?, 'ann')`, e.ID); err != nil {
				return err
			}
			return handlers.Emit(ctx, TicketAssigned{ID: e.ID, Agent: "ann"})
		}))
	h.Run(agents)

	// The fault: once, on the agents' queue.
	h.CrashAfterCommit(sagatest.Match{Event: "ticket.opened", Queue: "agents.assign"}, 1)

	// The desk opens ticket T-1 from plain code; its saga id is the ticket's.
	desk := h.Router("desk")
	if err := desk.Emitter().Emit(context.Background(), TicketOpened{ID: "T-1"}, handlers.WithSagaID("T-1")); err != nil {
		t.Fatal(err)
	}

	in := h.AwaitState(t, "T-1", saga.Completed)
	fmt.Println(in.State)
	h.AwaitEvents(t, "T-1", "ticket.opened", "ticket.assigned") // each recorded once
	for _, i := range h.Injected() {
		fmt.Println(i.Fault, i.Delivery.Event, "on", i.Delivery.Queue)
	}
	fmt.Println("deliveries:", len(h.AwaitDeliveries(t, sagatest.Match{Queue: "agents.assign"}, 2)))
	var n int
	if err := h.DB("agents").SQL().QueryRow(`SELECT COUNT(*) FROM assignments`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	fmt.Println("assignments:", n)
	h.AssertTraceChain(t, "T-1", "publish ticket.opened", "process ticket.opened", "outbox wait ticket.assigned", "publish ticket.assigned")
	// Output:
	// completed
	// crashed after commit ticket.opened on agents.assign
	// deliveries: 2
	// assignments: 1
}

// exampleT stands in for a test's *testing.T in the runnable example.
type exampleT struct {
	dir      string
	cleanups []func()
}

func newExampleT() *exampleT {
	dir, err := os.MkdirTemp("", "sagatest-example")
	if err != nil {
		panic(err)
	}
	return &exampleT{dir: dir}
}

func (t *exampleT) Helper()                      {}
func (t *exampleT) Name() string                 { return "Example" }
func (t *exampleT) TempDir() string              { return t.dir }
func (t *exampleT) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Fatal(args ...any)            { panic(fmt.Sprint(args...)) }
func (t *exampleT) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

func (t *exampleT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	_ = os.RemoveAll(t.dir)
}

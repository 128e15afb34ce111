package saga_test

import (
	"fmt"
	"os"

	"github.com/troupehq/troupe/saga"
)

// Events are Go types whose names are their routing keys, as for package
// handlers. A declaration names them through EventName, so that it
// follows a renamed event.
type (
	OrderPlaced     struct{ OrderID string }
	PaymentCaptured struct{ OrderID string }
	PaymentFailed   struct{ OrderID string }
	StockReserved   struct{ OrderID string }
	StockFailed     struct{ OrderID string }
	PaymentRefunded struct{ OrderID string }
)

func (OrderPlaced) EventName() string     { return "order.placed" }
func (PaymentCaptured) EventName() string { return "payment.captured" }
func (PaymentFailed) EventName() string   { return "payment.failed" }
func (StockReserved) EventName() string   { return "stock.reserved" }
func (StockFailed) EventName() string     { return "stock.failed" }
func (PaymentRefunded) EventName() string { return "payment.refunded" }

// order is a two-step saga: charge, then reserve; a reservation that
// fails refunds the charge.
var order = saga.Saga{
	Name:  "order",
	Start: OrderPlaced{}.EventName(),
	Steps: []saga.Step{{
		Name:    "charge",
		Service: "payment",
		Trigger: OrderPlaced{}.EventName(),
		Success: PaymentCaptured{}.EventName(),
		Failure: PaymentFailed{}.EventName(),
		// The payment service refunds when the next step fails.
		Compensation: &saga.Compensation{On: []string{StockFailed{}.EventName()}, Done: PaymentRefunded{}.EventName()},
	}, {
		Name:    "reserve",
		Service: "stock",
		Trigger: PaymentCaptured{}.EventName(),
		Success: StockReserved{}.EventName(),
		Failure: StockFailed{}.EventName(),
		// Nothing after it can fail: say so rather than leave it blank.
		NoCompensation: "last step",
	}},
	Completed: []string{StockReserved{}.EventName()},
	// A declined card has nothing to undo; a refund undid the charge.
	Compensated: []string{PaymentFailed{}.EventName(), PaymentRefunded{}.EventName()},
}

// Validate checks a declaration alone; Transitions tells a tracker what
// each event means.
func Example() {
	fmt.Println("valid:", order.Validate() == nil)
	for _, e := range []string{"order.placed", "stock.failed", "payment.refunded"} {
		fmt.Println(e, "=>", order.Transitions(e))
	}
	// Output:
	// valid: true
	// order.placed => [saga started step started charge]
	// stock.failed => [step failed reserve compensation started charge]
	// payment.refunded => [compensation done charge saga compensated]
}

// Check compares the declaration with what the services really consume.
// Here the payment service forgot its refund handler.
func ExampleCheck() {
	reg := saga.Registry{Services: []saga.ServiceHandlers{
		{Service: "payment", Handlers: []saga.HandlerEntry{{Name: "charge", Events: []string{"order.placed"}}}},
		{Service: "stock", Handlers: []saga.HandlerEntry{{Name: "reserve", Events: []string{"payment.captured"}}}},
	}}
	err := saga.Check(&order, reg)
	fmt.Println(err)
	for _, d := range saga.Defects(err) {
		fmt.Printf("%s in step %s on %s\n", d.Defect, d.Step, d.Event)
	}
	// Output:
	// saga order: step charge: event stock.failed: unconsumed: compensation event: no handler consumes it
	// unconsumed in step charge on stock.failed
}

// A declaration that misses a path is refused with every problem named.
func ExampleSaga_Validate() {
	broken := order
	broken.Steps = []saga.Step{order.Steps[0], order.Steps[1]}
	broken.Steps[1].Failure = "stock.lost" // nobody compensates on it, and it ends nothing
	fmt.Println(broken.Validate())
	// Output:
	// saga order: step charge: event stock.failed: unreachable: the compensation event is emitted by no step
	// saga order: step reserve: event stock.lost: dead end: the failure has no path to an end (no step, compensation or ending consumes what follows it)
	// saga order: step reserve: event stock.lost: uncompensated: the failure never starts the compensation of step charge (payment), which completed before it
}

// WriteMermaid draws the saga; WriteDOT does the same for Graphviz.
func ExampleWriteMermaid() {
	if err := saga.WriteMermaid(os.Stdout, &order); err != nil {
		fmt.Println(err)
	}
	// Output:
	// %% saga order, drawn by package saga from its declaration
	// flowchart LR
	//   start(["order"])
	//   subgraph svc0["payment"]
	//     s0["charge"]
	//     c0["undo charge"]
	//   end
	//   subgraph svc1["stock"]
	//     s1["reserve"]
	//   end
	//   completed(["completed"])
	//   compensated(["compensated"])
	//   start -->|order.placed| s0
	//   s0 -->|payment.captured| s1
	//   s0 -.->|payment.failed| compensated
	//   c0 ==>|payment.refunded| compensated
	//   s1 -->|stock.reserved| completed
	//   s1 -.->|stock.failed| c0
	//   classDef sagastart fill:#ffffff,stroke:#757575
	//   class start sagastart
	//   classDef step fill:#e3f2fd,stroke:#1565c0
	//   class s0,s1 step
	//   classDef compensation fill:#fff3e0,stroke:#ef6c00
	//   class c0 compensation
	//   classDef completedend fill:#e8f5e9,stroke:#2e7d32
	//   class completed completedend
	//   classDef unsuccessfulend fill:#ffebee,stroke:#c62828
	//   class compensated unsuccessfulend
	//   linkStyle 0,1,4 stroke:#2e7d32
	//   linkStyle 2,5 stroke:#c62828
	//   linkStyle 3 stroke:#ef6c00
}

// Derive is how the tracker knows where an instance is: from the set of
// its history's entries, whatever order they arrived in. Here the
// reservation failed before the tracker heard of the capture, and the
// refund is still to come.
func ExampleDerive() {
	s := checkout()
	var history []saga.Entry
	for i, event := range []string{"inventory.failed", "order.placed", "payment.captured"} {
		history = append(history, saga.Entry{Seq: int64(i + 1), Kind: saga.EventEntry, Event: event})
	}
	st := saga.Derive(s, history)
	fmt.Println(st.State, "at step", st.Step)
	// The refund arrives, then the cancellation: the order is undone.
	for i, event := range []string{"payment.refunded", "order.cancelled"} {
		history = append(history, saga.Entry{Seq: int64(i + 4), Kind: saga.EventEntry, Event: event})
	}
	st = saga.Derive(s, history)
	fmt.Println(st.State, "at step", st.Step)
	// Output:
	// compensating at step charge
	// compensated at step place
}

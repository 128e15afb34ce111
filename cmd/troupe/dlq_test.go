package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/handlers"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/envelope"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
}

func (orderPlaced) EventName() string { return "order.placed" }

func TestDLQInProcess(t *testing.T) { testDLQ(t, "mem://cli-dlq") }

// testDLQ parks three dead letters (two errors, two sagas), then lists,
// shows and replays them with the command, and checks that the handler gets
// the replayed one with the replay recorded.
func testDLQ(t *testing.T, url string) {
	tr, err := transport.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	service := "pay" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	policy := handlers.RetryPolicy{}
	r, err := handlers.NewRouter(handlers.Config{Service: service, Exchange: "bus." + service, Retry: &policy}, tr)
	if err != nil {
		t.Fatal(err)
	}
	var fixed atomic.Bool
	var mu sync.Mutex
	var replayed []map[string]string
	handlers.MustHandle(r, "charge", handlers.HandlerFunc[orderPlaced](func(ctx context.Context, e orderPlaced) error {
		if !fixed.Load() {
			if e.OrderID == "3" {
				return handlers.Permanent(errors.New("card expired"))
			}
			return handlers.Permanent(errors.New("gateway down"))
		}
		md := handlers.Metadata(ctx)
		mu.Lock()
		replayed = append(replayed, map[string]string{
			"order": e.OrderID, "by": md.Get(envelope.ReplayedByKey), "replays": md.Get(envelope.ReplaysKey),
			"at": md.Get(envelope.ReplayedAtKey), "attempts": md.Get(envelope.AttemptsKey),
		})
		mu.Unlock()
		return nil
	}))
	handlers.MustHandle(r, "audit", handlers.HandlerFunc[orderPlaced](func(ctx context.Context, e orderPlaced) error { return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	<-r.Running()
	em := r.Emitter()
	for _, o := range []struct{ id, saga string }{{"1", "saga-a"}, {"2", "saga-a"}, {"3", "saga-b"}} {
		if err := em.Emit(ctx, orderPlaced{OrderID: o.id}, handlers.WithSagaID(o.saga)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); r.Stats().DeadLettered < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", r.Stats())
		}
	}
	queue := service + ".charge"
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(ctx, append([]string{"dlq"}, args...), &out, &errOut); err != nil {
			t.Fatalf("troupe dlq %v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	list := cli("list", "-url", url, "-queue", queue)
	for _, want := range []string{queue + ".dlq: 3 dead letters", "2  permanent: gateway down", "1  permanent: card expired", "2  saga-a", "1  saga-b"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	// A listing leaves the letters in place.
	if again := cli("list", "-url", url, "-queue", queue+".dlq"); !strings.Contains(again, "3 dead letters") {
		t.Fatalf("second list:\n%s", again)
	}
	id := strings.Fields(list[strings.Index(list, "ERROR\n")+len("ERROR\n"):])[0]
	show := cli("show", "-url", url, "-queue", queue, "-id", id)
	for _, want := range []string{"id: " + id, envelope.ErrorKindKey + ": permanent", envelope.HandlerKey + ": charge", `"order_id"`} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"dlq", "replay", "-url", url, "-queue", queue}, &out, &errOut); err == nil {
		t.Fatal("replay with no filter accepted")
	}
	fixed.Store(true)
	if got := cli("replay", "-url", url, "-queue", queue, "-saga", "saga-b", "-by", "alice"); !strings.Contains(got, "1 replayed") {
		t.Fatalf("replay:\n%s", got)
	}
	for deadline := time.Now().Add(30 * time.Second); r.Stats().Handled < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) { // 3 audits + the replayed charge
			t.Fatalf("replayed letter not handled: %+v", r.Stats())
		}
	}
	mu.Lock()
	if len(replayed) != 1 || replayed[0]["order"] != "3" || replayed[0]["by"] != "alice" ||
		replayed[0]["replays"] != "1" || replayed[0]["at"] == "" || replayed[0]["attempts"] != "" {
		t.Fatalf("handled after replay: %v", replayed)
	}
	mu.Unlock()
	if left := cli("list", "-url", url, "-queue", queue); !strings.Contains(left, "2 dead letters") {
		t.Fatalf("after replay:\n%s", left)
	}
}

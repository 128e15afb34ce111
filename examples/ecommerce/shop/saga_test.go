package shop_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/saga"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the checkout's declaration files from CheckoutSaga")

func TestCheckoutSagaIsValid(t *testing.T) {
	if err := shop.CheckoutSaga.Validate(); err != nil {
		t.Fatal(err)
	}
}

// startServices runs some of the services on a private bus.
func startServices(t *testing.T, services ...string) *shop.Stack {
	t.Helper()
	return startConfig(t, shop.Config{
		BusURL:   fmt.Sprintf("mem://shop-saga-%d", stackSeq.Add(1)),
		DataDir:  t.TempDir(),
		Services: services,
		Retry:    fastRetry(),
	})
}

// startConfig starts a stack of cfg, closed when the test ends.
func startConfig(t *testing.T, cfg shop.Config) *shop.Stack {
	t.Helper()
	s, err := shop.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// TestCheckoutSagaAgainstTheStack checks the declaration against the
// handlers the four services really register (Start checks it too).
func TestCheckoutSagaAgainstTheStack(t *testing.T) {
	s := startServices(t)
	reg, err := s.Registry()
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Services) != 4 {
		t.Fatalf("registry has %d services: %+v", len(reg.Services), reg)
	}
	if err := saga.Check(&shop.CheckoutSaga, reg); err != nil {
		t.Fatal(err)
	}
}

type defect struct {
	kind        saga.Defect
	step, event string
}

// TestCheckoutSagaCheckCatchesDroppedHandlers runs the stack without some
// of its handlers: the check must name the step and event left unhandled.
func TestCheckoutSagaCheckCatchesDroppedHandlers(t *testing.T) {
	full := startServices(t)
	tests := []struct {
		name string
		give func(t *testing.T) saga.Registry
		want []defect
	}{
		{"no notify service", func(t *testing.T) saga.Registry {
			return registry(t, startServices(t, shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc))
		}, []defect{{saga.Unconsumed, "notify", "order.confirmed"}, {saga.Unconsumed, "notify", "order.cancelled"}}},
		{"no payment service", func(t *testing.T) saga.Registry {
			return registry(t, startServices(t, shop.OrderSvc, shop.InventorySvc, shop.NotifySvc))
		}, []defect{{saga.Unconsumed, "charge", "order.placed"}, {saga.Unconsumed, "charge", "inventory.failed"}, {saga.Unconsumed, "charge", "saga.timed_out"}}},
		{"no refund handler", func(t *testing.T) saga.Registry {
			return dropHandler(registry(t, full), shop.PaymentSvc, "refund")
		}, []defect{{saga.Unconsumed, "charge", "inventory.failed"}}},
		{"no undo on a timeout", func(t *testing.T) saga.Registry {
			return dropHandler(registry(t, full), shop.PaymentSvc, "on-timeout")
		}, []defect{{saga.Unconsumed, "charge", "saga.timed_out"}}},
		{"no cancel on a declined payment", func(t *testing.T) saga.Registry {
			return dropHandler(registry(t, full), shop.OrderSvc, "on-payment-failed")
		}, []defect{{saga.Unconsumed, "place", "payment.failed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := saga.Check(&shop.CheckoutSaga, tt.give(t))
			var got []defect
			for _, d := range saga.Defects(err) {
				got = append(got, defect{d.Defect, d.Step + d.Listener, d.Event})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("defects\n got %v\nwant %v\nerror: %v", got, tt.want, err)
			}
		})
	}
}

func registry(t *testing.T, s *shop.Stack) saga.Registry {
	t.Helper()
	reg, err := s.Registry()
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func dropHandler(reg saga.Registry, service, handler string) saga.Registry {
	for i, sh := range reg.Services {
		if sh.Service != service {
			continue
		}
		var kept []saga.HandlerEntry
		for _, h := range sh.Handlers {
			if h.Name != handler {
				kept = append(kept, h)
			}
		}
		if len(kept) == len(sh.Handlers) {
			panic("no handler " + service + "." + handler)
		}
		reg.Services[i].Handlers = kept
	}
	return reg
}

// TestCheckoutDeclarationFiles keeps the JSON declarations, the one beside
// the example and the copy that troupe graph embeds, equal to
// CheckoutSaga. go test ./examples/ecommerce/shop -run DeclarationFiles
// -rewrite writes them.
func TestCheckoutDeclarationFiles(t *testing.T) {
	want, err := shop.CheckoutSaga.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join("..", "checkout.saga.json"),
		filepath.Join("..", "..", "..", "cmd", "troupe", "checkout.saga.json"),
	} {
		if *rewrite {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from CheckoutSaga; rerun with -rewrite", path)
		}
		s, err := saga.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*s, shop.CheckoutSaga) {
			t.Errorf("%s reads back as %+v", path, s)
		}
	}
}

// TestCheckoutTransitions is the table of docs/sagas.md: what each event
// of the checkout means to its tracker.
func TestCheckoutTransitions(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{"order.placed", "[step succeeded place saga started step started charge]"},
		{"payment.captured", "[step succeeded charge step started reserve]"},
		{"payment.failed", "[step failed charge compensation started place]"},
		{"inventory.reserved", "[step succeeded reserve step started confirm]"},
		{"inventory.failed", "[step failed reserve compensation started charge]"},
		{"payment.refunded", "[compensation done charge compensation started place]"},
		{"order.cancelled", "[compensation done place saga compensated]"},
		{"order.confirmed", "[step succeeded confirm saga completed]"},
		{"notification.sent", "[observed by notify]"},
		{"saga.timed_out", "[compensation started charge]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(shop.CheckoutSaga.Transitions(tt.give)); got != tt.want {
			t.Errorf("Transitions(%s) = %s, want %s", tt.give, got, tt.want)
		}
	}
	if n := len(shop.CheckoutSaga.Events()); n != len(tests) {
		t.Errorf("the checkout has %d events, the table %d", n, len(tests))
	}
}

// TestCheckoutSagaAgainstRegistryFiles runs each service as its own stack,
// as one process per service would, each writing its registry file; the
// check reads them all back.
func TestCheckoutSagaAgainstRegistryFiles(t *testing.T) {
	bus := fmt.Sprintf("mem://shop-saga-files-%d", stackSeq.Add(1))
	dir := t.TempDir()
	files := map[string]string{}
	for _, svc := range []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc} {
		s, err := shop.Start(context.Background(), shop.Config{BusURL: bus, DataDir: dir, Services: []string{svc}, Retry: fastRetry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		reg, err := s.Registry()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := saga.WriteRegistry(&buf, s.Routers()...); err != nil {
			t.Fatal(err)
		}
		files[svc] = filepath.Join(dir, svc+".registry.json")
		if err := os.WriteFile(files[svc], buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if len(reg.Services) != 1 || reg.Services[0].Service != svc {
			t.Fatalf("stack of %s registers %+v", svc, reg)
		}
	}
	reg, err := saga.ReadRegistryFiles(files[shop.OrderSvc], files[shop.PaymentSvc], files[shop.InventorySvc], files[shop.NotifySvc])
	if err != nil {
		t.Fatal(err)
	}
	if err := saga.Check(&shop.CheckoutSaga, reg); err != nil {
		t.Fatal(err)
	}
	reg, err = saga.ReadRegistryFiles(files[shop.OrderSvc], files[shop.PaymentSvc], files[shop.NotifySvc])
	if err != nil {
		t.Fatal(err)
	}
	got := saga.Defects(saga.Check(&shop.CheckoutSaga, reg))
	if len(got) != 1 || got[0].Step != "reserve" || got[0].Event != "payment.captured" || got[0].Defect != saga.Unconsumed {
		t.Fatalf("without the inventory's file: %v", got)
	}
}

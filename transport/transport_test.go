package transport_test

import (
	"strings"
	"testing"

	"github.com/troupehq/troupe/tracing"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/bus"
)

func TestOpenRejectsBadURLs(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{"kafka://localhost:9092", `unsupported URL scheme "kafka"`},
		{"localhost:5672", `unsupported URL scheme "localhost"`},
		{"amqp://guest:guest@host:notaport/", "bad URL"},
		{"mem://shop?x=1", "bad mem URL"},
		{"mem://u:p@shop", "bad mem URL"},
		{"://", "bad URL"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			_, err := transport.Open(tt.give)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open(%q) error %v, want it to mention %q", tt.give, err, tt.want)
			}
		})
	}
}

func TestOpenMemSharesBrokerByName(t *testing.T) {
	a, err := transport.Open("mem://open-test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := transport.Open("mem://open-test/")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if transport.MemBroker("open-test") != transport.MemBroker("open-test") || transport.MemBroker("open-test") == transport.MemBroker("") {
		t.Fatal("named brokers are not shared by name")
	}
	if _, err := transport.Open("mem://open-test/shop"); err != nil {
		t.Fatalf("vhost: %v", err)
	}
	if vs := transport.MemBroker("open-test").VHosts(); len(vs) != 2 {
		t.Fatalf("vhosts %v", vs)
	}
}

// TestMessagingSystem: spans name the broker a transport reaches (the
// messaging.system attribute): the bundled broker as "troupe", an AMQP
// URL as "rabbitmq"; publishers say the same as their transport.
func TestMessagingSystem(t *testing.T) {
	for url, want := range map[string]string{"mem://system-test": tracing.SystemBundled, "amqp://127.0.0.1:1/": tracing.SystemRabbitMQ} {
		tr, err := transport.Open(url)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := tr.NewPublisher(bus.PublisherConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if got, gotPub := tracing.SystemOf(tr), tracing.SystemOf(pub); got != want || gotPub != want {
			t.Errorf("%s: transport %q, publisher %q; want %q", url, got, gotPub, want)
		}
		tr.Close()
	}
	if got := tracing.SystemOf(struct{}{}); got != "" {
		t.Errorf("a value without MessagingSystem: %q, want none", got)
	}
}

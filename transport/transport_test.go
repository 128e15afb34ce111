package transport_test

import (
	"strings"
	"testing"

	"github.com/troupehq/troupe/transport"
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

package transport_test

import (
	"testing"

	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/transport/transporttest"
)

// TestConformanceInProcess runs the conformance suite on the bundled broker.
func TestConformanceInProcess(t *testing.T) {
	transporttest.Run(t, transporttest.Features{}, func(t *testing.T) transport.Transport {
		tr, err := transport.Open("mem://conformance")
		if err != nil {
			t.Fatal(err)
		}
		return tr
	})
}

//go:build integration

package main

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestDLQRabbitMQ(t *testing.T) { testDLQ(t, testutil.AMQPURL(t)) }

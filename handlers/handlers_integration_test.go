//go:build integration

package handlers_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestScenariosRabbitMQ(t *testing.T) { runScenarios(t, testutil.AMQPURL(t)) }

//go:build integration

package handlers_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestScenariosRabbitMQ(t *testing.T) { runScenarios(t, testutil.AMQPURL(t)) }

func TestTxRabbitMQPostgres(t *testing.T) {
	runTxScenarios(t, testutil.AMQPURL(t), func(t *testing.T) string { return testutil.FreshPostgres(t) })
}

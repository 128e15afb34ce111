//go:build !integration

package handlers_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestIntegrationSuites(t *testing.T) { testutil.SkipIntegration(t) }

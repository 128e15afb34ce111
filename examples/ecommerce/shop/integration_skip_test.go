//go:build !integration

package shop_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestIntegrationSuites(t *testing.T) { testutil.SkipIntegration(t) }

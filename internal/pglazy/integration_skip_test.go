//go:build !integration

package pglazy

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestIntegrationSuites(t *testing.T) { testutil.SkipIntegration(t) }

//go:build !integration

package main

import (
	"testing"

	"github.com/troupehq/troupe/internal/testutil"
)

func TestIntegrationSuites(t *testing.T) { testutil.SkipIntegration(t) }

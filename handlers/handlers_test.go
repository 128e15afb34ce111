package handlers_test

import "testing"

func TestScenariosInProcess(t *testing.T) { runScenarios(t, "mem://handlers") }

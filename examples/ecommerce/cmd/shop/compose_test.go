package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// TestComposeFileRunsTheShop checks the shop containers of the root
// docker-compose.yml against this binary: each runs a known subcommand,
// every variable it sets is one that subcommand reads (or OTEL_*), the
// settings parse, and the health check probes the port the service serves.
// (`make test` checks the file's syntax with docker-compose itself.)
func TestComposeFileRunsTheShop(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]struct {
			Image       string
			Command     []string
			Environment map[string]string
			Healthcheck struct{ Test []string }
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
		}
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	services := []string{shop.OrderSvc, shop.PaymentSvc, shop.InventorySvc, shop.NotifySvc}
	for _, name := range services {
		t.Run(name, func(t *testing.T) {
			svc, ok := file.Services[name]
			if !ok {
				t.Fatalf("no %s service", name)
			}
			if len(svc.Command) == 0 || svc.Command[0] != name {
				t.Fatalf("command %v, want %s", svc.Command, name)
			}
			fs, o := newFlags(name)
			byEnv := map[string]string{}
			for flagName, env := range envNames {
				if fs.Lookup(flagName) != nil {
					byEnv[env] = flagName
				}
			}
			for k, v := range svc.Environment {
				switch {
				case strings.HasPrefix(k, "OTEL_"):
				case byEnv[k] != "":
					t.Setenv(k, v)
				default:
					t.Errorf("%s=%s: `shop %s` reads no such variable", k, v, name)
				}
			}
			if err := o.parse(fs, svc.Command[1:]); err != nil {
				t.Fatal(err)
			}
			if err := serviceBus(o.bus); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(o.db, "postgres://") {
				t.Fatalf("database %q, want PostgreSQL", o.db)
			}
			addr := o.http
			if name == shop.OrderSvc {
				addr = o.addr
			}
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("HTTP address %q: %v", addr, err)
			}
			hc := svc.Healthcheck.Test
			if len(hc) != 4 || hc[2] != "healthcheck" {
				t.Fatalf("health check %v, want [CMD shop healthcheck URL]", hc)
			}
			u, err := url.Parse(hc[3])
			if err != nil || u.Port() != port || u.Path != "/healthz" {
				t.Fatalf("health check probes %s, the service serves port %s", hc[3], port)
			}
			for _, dep := range []string{"rabbitmq", "postgres"} {
				if svc.DependsOn[dep].Condition != "service_healthy" {
					t.Errorf("depends on %s: %q, want service_healthy", dep, svc.DependsOn[dep].Condition)
				}
			}
			if name == shop.OrderSvc {
				for _, dep := range services[1:] {
					if svc.DependsOn[dep].Condition != "service_healthy" {
						t.Errorf("the order service must start after %s is healthy (its queues bound)", dep)
					}
				}
			}
			if !slices.Contains([]string{"http://jaeger:4317", "http://jaeger:4318"}, svc.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
				t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q, want Jaeger's", svc.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
			}
		})
	}
}

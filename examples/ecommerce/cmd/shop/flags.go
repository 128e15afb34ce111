package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// options are the flags of the serving commands; each also reads an
// environment variable (envNames), which the command line overrides.
type options struct {
	addr, http, data, bus, db, exchange, queuePrefix string
	declined, stock, logLevel, checkout              string
	jaegerUI, metricsAddr, registry, cpuProfile      string
	limit                                            int
	transient                                        float64
	seed                                             uint64
	quiet                                            bool

	level slog.Level
	items map[string]int
	mode  shop.Checkout
}

// envNames maps a flag to the environment variable it also reads.
var envNames = map[string]string{
	"addr":               "ADDR",
	"http":               "TROUPE_HTTP_ADDR",
	"data":               "TROUPE_DATA_DIR",
	"bus":                "TROUPE_BUS_URL",
	"db":                 "TROUPE_DB_URL",
	"exchange":           "TROUPE_EXCHANGE",
	"queue-prefix":       "TROUPE_QUEUE_PREFIX",
	"declined-method":    "TROUPE_DECLINED_METHOD",
	"limit":              "TROUPE_PAYMENT_LIMIT",
	"transient-failures": "TROUPE_TRANSIENT_FAILURES",
	"seed":               "TROUPE_SEED",
	"stock":              "TROUPE_STOCK",
	"quiet":              "TROUPE_QUIET",
	"log-level":          "TROUPE_LOG_LEVEL",
	"checkout":           "TROUPE_CHECKOUT",
	"jaeger-ui":          "JAEGER_UI_URL",
	"metrics-addr":       "TROUPE_METRICS_ADDR",
	"registry":           "TROUPE_REGISTRY_FILE",
	"cpuprofile":         "TROUPE_CPU_PROFILE",
}

// newFlags declares the flags of command cmd ("all" or a service name):
// each service gets only the flags it uses.
func newFlags(cmd string) (*flag.FlagSet, *options) {
	fs := flag.NewFlagSet("shop "+cmd, flag.ContinueOnError)
	o := &options{}
	all := cmd == "all"
	if all || cmd == shop.OrderSvc {
		fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "HTTP address of the order API (and /healthz)")
	} else {
		fs.StringVar(&o.http, "http", "", "HTTP address of /healthz, e.g. 127.0.0.1:8081; none when empty")
	}
	if all {
		fs.StringVar(&o.data, "data", "data", "folder of the services' SQLite files")
		fs.StringVar(&o.bus, "bus", "mem://shop", "bus URL: mem://NAME (bundled broker) or amqp://...")
	} else {
		fs.StringVar(&o.data, "data", "data", "folder of the service's SQLite file, when -db is empty")
		fs.StringVar(&o.bus, "bus", "", "bus URL of the broker the services share: amqp://user:pass@host:port/vhost (required)")
		fs.StringVar(&o.db, "db", "", "database: a SQLite file path or postgres://...; empty: DATA/"+cmd+".db")
		fs.StringVar(&o.registry, "registry", "", "write what this service's handlers consume to this JSON file at start-up, for `troupe saga check`")
	}
	fs.StringVar(&o.exchange, "exchange", "", "bus exchange; the framework's default when empty")
	fs.StringVar(&o.queuePrefix, "queue-prefix", "", "put before the service names of the queues, to keep stacks sharing a broker apart")
	if all || cmd == shop.PaymentSvc {
		fs.StringVar(&o.declined, "declined-method", "card-declined", "payment method the simulated gateway declines")
		fs.IntVar(&o.limit, "limit", 100_000, "amount (cents) above which payments are declined")
		fs.Float64Var(&o.transient, "transient-failures", 0.05, "share of charge attempts that time out (retried)")
		fs.Uint64Var(&o.seed, "seed", 0, "seed of the simulated gateway's timeouts; 0: a new one each run")
	}
	if all || cmd == shop.InventorySvc {
		fs.StringVar(&o.stock, "stock", "apple=1000,pear=500,plum=50", "initial stock: sku=quantity,...")
	}
	if cmd != "notify" {
		fs.StringVar(&o.checkout, "checkout", "saga", "checkout mode: saga (choreography with compensation) or 2pc (two-phase commit coordinated by the order service)")
	}
	if all {
		fs.StringVar(&o.jaegerUI, "jaeger-ui", shop.DefaultJaegerUI, "Jaeger UI the live page links each order's trace to (<url>/trace/<trace id>)")
	}
	fs.BoolVar(&o.quiet, "quiet", false, "do not print a line per event")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of stderr: debug, info, warn or error")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics on this address instead of on the HTTP server of -addr / -http")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fs.VisitAll(func(f *flag.Flag) {
		if env, ok := envNames[f.Name]; ok {
			f.Usage += " (env " + env + ")"
		}
	})
	return fs, o
}

// parse sets the flags from the environment, then from args, and checks
// them.
func (o *options) parse(fs *flag.FlagSet, args []string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := envNames[f.Name]
		if v, ok := os.LookupEnv(env); ok && env != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a value for -%s (%s): %w", env, v, f.Name, wanted(f), err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	if err := o.level.UnmarshalText([]byte(o.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel))
	}
	if !(o.transient >= 0 && o.transient <= 1) { // NaN too
		errs = append(errs, fmt.Errorf("-transient-failures %v: must be in 0..1", o.transient))
	}
	if o.limit < 0 {
		errs = append(errs, fmt.Errorf("-limit %d: must not be negative", o.limit))
	}
	if fs.Lookup("stock") != nil {
		items, err := parseStock(o.stock)
		errs = append(errs, err)
		o.items = items
	}
	if fs.Lookup("checkout") != nil {
		mode, err := shop.ParseCheckout(o.checkout)
		if err != nil {
			errs = append(errs, fmt.Errorf("-checkout %q: want saga or 2pc", o.checkout))
		}
		o.mode = mode
	}
	if fs.Lookup("jaeger-ui") != nil {
		_, err := shop.ParseJaegerURL(o.jaegerUI)
		errs = append(errs, err)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return errors.Join(errs...)
}

// payment returns the simulated gateway's configuration.
func (o *options) payment() shop.PaymentConfig {
	return shop.PaymentConfig{DeclinedMethod: o.declined, Limit: o.limit, TransientFailureRate: o.transient, Seed: o.seed}
}

// serviceBus checks the bus URL of a service in its own process: it must
// reach a broker the other processes share.
func serviceBus(raw string) error {
	if raw == "" {
		return errors.New("-bus is required (or TROUPE_BUS_URL): the amqp:// URL of the broker the services share")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-bus: %w", err)
	}
	switch u.Scheme {
	case "amqp", "amqps":
		if u.Host == "" {
			return fmt.Errorf("-bus %q: no host", u.Redacted())
		}
		return nil
	case "mem":
		return fmt.Errorf("-bus %q: the bundled broker lives in one process; a service alone needs a broker shared with the others (amqp://...), or run `shop all`", u.Redacted())
	}
	return fmt.Errorf("-bus %q: unsupported scheme %q: want amqp:// or amqps://", u.Redacted(), u.Scheme)
}

// serviceDB turns the -db flag into a database URL: a postgres:// URL is
// kept, anything else without a scheme is a SQLite file path (created with
// its folder).
func serviceDB(raw, data, svc string) (string, error) {
	if raw == "" {
		raw = filepath.Join(data, svc+".db")
	}
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return "", fmt.Errorf("-db: %w", err)
		}
		return raw, nil
	case strings.Contains(raw, "://"):
		u, err := url.Parse(raw)
		if err == nil {
			raw = u.Redacted()
		}
		return "", fmt.Errorf("-db %q: want a SQLite file path or postgres://...", raw)
	}
	path := strings.TrimPrefix(raw, "sqlite:")
	if path == "" {
		return "", errors.New("-db: empty SQLite path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("-db: %w", err)
	}
	return "sqlite:" + path, nil
}

// redact hides the password of a URL for printing.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

func parseStock(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		sku, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		sku = strings.TrimSpace(sku)
		if !ok || sku == "" {
			return nil, fmt.Errorf("-stock: %q is not sku=quantity", part)
		}
		q, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || q < 0 {
			return nil, fmt.Errorf("-stock: the quantity of %s, %q, is not a whole number of at least 0", sku, n)
		}
		if _, dup := out[sku]; dup {
			return nil, fmt.Errorf("-stock: %s is given twice", sku)
		}
		out[sku] = q
	}
	return out, nil
}

// wanted says what kind of value flag f takes, for an error about a value
// from the environment (the flag package only says "parse error").
func wanted(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "a string"
	}
	switch g.Get().(type) {
	case bool:
		return "true or false"
	case int, int64:
		return "a whole number"
	case uint, uint64:
		return "a whole number of at least 0"
	case float64:
		return "a number"
	case time.Duration:
		return "a duration such as 1.5s"
	}
	return "a string"
}

package outbox

import (
	"runtime"
	"strings"
	"testing"
)

func TestPostgresPool(t *testing.T) {
	tests := []struct {
		give      string
		wantDSN   string
		wantConns int
		wantErr   string
	}{
		{"postgres://u:p@127.0.0.1:5432/shop?sslmode=disable", "postgres://u:p@127.0.0.1:5432/shop?sslmode=disable", max(4, runtime.NumCPU()), ""},
		{"postgres://u:p@127.0.0.1/shop?pool_max_conns=12&sslmode=disable", "postgres://u:p@127.0.0.1/shop?sslmode=disable", 12, ""},
		{"postgresql://127.0.0.1/shop?pool_max_conns=1", "postgresql://127.0.0.1/shop", 1, ""},
		{"postgres://127.0.0.1/shop?pool_max_conns=0", "", 0, `pool_max_conns "0" is not a positive integer`},
		{"postgres://127.0.0.1/shop?pool_max_conns=many", "", 0, `pool_max_conns "many" is not a positive integer`},
		{"postgres://127.0.0.1/shop?pool_max_conns=", "", 0, `pool_max_conns "" is not a positive integer`},
		{"postgres://127.0.0.1:port/shop", "", 0, "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			dsn, conns, err := postgresPool(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || dsn != tt.wantDSN || conns != tt.wantConns {
				t.Fatalf("= %q, %d, %v; want %q, %d", dsn, conns, err, tt.wantDSN, tt.wantConns)
			}
		})
	}
}
